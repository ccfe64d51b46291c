//! A split between the trackers heals without losing what either side acknowledged: the link
//! cut while both run (a TCP forwarder between them, cut and healed), and one tracker frozen
//! past the link timeout while the other takes over. Every write that conflicts with none is
//! at both trackers afterwards; a conflicting one is undone by the documented rule and its
//! client is told at its next command (`write_undone`).

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// A TCP forwarder from a local port to `upstream` that the test can cut (every connection
/// closed, new ones refused) and heal. Its threads end when it is dropped.
struct Forwarder {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Forwarder {
    fn start(upstream: SocketAddr) -> Forwarder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the forwarder");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("forwarder address");
        let cut = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (c, s, cs) = (cut.clone(), stop.clone(), conns.clone());
        thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let down = match listener.accept() {
                    Ok((d, _)) => d,
                    Err(_) => {
                        thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                };
                if c.load(Ordering::SeqCst) {
                    continue; // cut: dropped at once
                }
                let Ok(up) = TcpStream::connect(upstream) else {
                    continue;
                };
                let _ = down.set_nonblocking(false);
                let mut held = cs.lock().expect("conns");
                for (from, to) in [(&down, &up), (&up, &down)] {
                    let (Ok(mut r), Ok(mut w)) = (from.try_clone(), to.try_clone()) else {
                        continue;
                    };
                    thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        while let Ok(n) = r.read(&mut buf) {
                            if n == 0 || w.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = w.shutdown(std::net::Shutdown::Both);
                    });
                }
                held.push(down);
                held.push(up);
            }
        });
        Forwarder {
            addr,
            cut,
            stop,
            conns,
        }
    }

    /// Closes every forwarded connection and refuses new ones until `heal`.
    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for c in self.conns.lock().expect("conns").drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }

    fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.cut();
    }
}

/// Tracker 1 started as usual; tracker 2 with an info file whose line 1 is the forwarder, so
/// the link (tracker 2 dials tracker 1) runs through it. Clients use the real addresses.
fn pair_through_forwarder() -> (Cluster, Forwarder) {
    let (cl, fwd) = start_through_forwarder(false);
    cl.wait_paired();
    (cl, fwd)
}

/// Both trackers started (fresh), the link through a forwarder, cut from the start if `cut`.
fn start_through_forwarder(cut: bool) -> (Cluster, Forwarder) {
    let mut cl = Cluster::new(2);
    let fwd = Forwarder::start(cl.addrs[0]);
    if cut {
        fwd.cut();
    }
    let info2 = cl.path().join("info-via-forwarder");
    std::fs::write(&info2, format!("{}\n{}\n", fwd.addr, cl.addrs[1])).expect("write info");
    cl.spawn(1);
    let log = std::fs::File::create(cl.log_path(2)).expect("log file");
    let mut cmd = std::process::Command::new(TRACKER);
    cmd.arg(&info2)
        .arg("2")
        .arg("--data-dir")
        .arg(cl.data_dir(2))
        .arg("--cluster-key")
        .arg(&cl.key)
        // As the harness starts trackers: logins at the fewest iterations.
        .args(["--kdf-iterations", "4096"])
        .arg("-v")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log);
    let child = groupshare::testkit::spawn_child("tracker 2", &mut cmd).expect("start tracker 2");
    cl.procs[1] = Some(child);
    cl.wait_serving(1);
    cl.wait_serving(2);
    (cl, fwd)
}

/// Waits (bounded) until both trackers lead alone.
fn wait_both_solo(cl: &Cluster) {
    let deadline = Instant::now() + WAIT;
    while !(cl.role(1) == "leader-solo" && cl.role(2) == "leader-solo") {
        assert!(
            Instant::now() < deadline,
            "the trackers did not both lead alone: {} / {}",
            cl.role(1),
            cl.role(2)
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Paired again, both serving (a tracker still proposing its writes again does not), one
/// state.
fn wait_healed(cl: &Cluster) {
    cl.wait_paired();
    cl.wait_serving(1);
    cl.wait_serving(2);
    cl.wait_same_digest();
}

/// A connection to tracker `n` as client instance `instance`.
fn conn_as(cl: &Cluster, n: usize, instance: u64) -> Conn {
    let mut c = Conn::connect(cl.addrs[n - 1]).expect("connect");
    c.ok(&v::hello(instance));
    c
}

/// A user with a session at tracker `n`, as instance `instance`; the session's token and
/// secret.
fn user_at(cl: &Cluster, n: usize, instance: u64, user: &str) -> (Conn, (String, String)) {
    let mut c = conn_as(cl, n, instance);
    c.ok(&v::create_user(user, &format!("pw-{user}")));
    let token = login(&mut c, user);
    (c, token)
}

fn login(c: &mut Conn, user: &str) -> (String, String) {
    c.login_as(user, &format!("pw-{user}"), "127.0.0.1:1")
}

/// The group names `list_groups` gives at tracker `n` (a fresh session of `user`, who exists
/// there by then).
fn groups_at(cl: &Cluster, n: usize, user: &str) -> Vec<String> {
    let mut c = conn_as(cl, n, rand_u64());
    login(&mut c, user);
    let r = c.req(&Verb::ListGroups);
    assert!(r[0].starts_with("list"), "list_groups at {n}: {r:?}");
    c.ok(&Verb::Logout);
    let mut names: Vec<String> = r[1..]
        .iter()
        .filter_map(|l| l.split(' ').next().map(str::to_string))
        .collect();
    names.sort();
    names
}

/// The files `list_files group` gives at tracker `n` to `user`.
fn files_at(cl: &Cluster, n: usize, user: &str, group: &str) -> Vec<String> {
    let mut c = conn_as(cl, n, rand_u64());
    login(&mut c, user);
    let r = c.req(&v::list_files(group));
    assert!(r[0].starts_with("list"), "list_files at {n}: {r:?}");
    c.ok(&Verb::Logout);
    r[1..]
        .iter()
        .filter_map(|l| l.split(' ').next().map(str::to_string))
        .collect()
}

/// Instance `instance`'s next command after the heal, at tracker `n`, re-attaching `token`
/// first: `Some(message)` if it was answered `write_undone`.
fn next_command_told(
    cl: &Cluster,
    n: usize,
    instance: u64,
    (token, secret): &(String, String),
) -> Option<String> {
    let mut c = conn_as(cl, n, instance);
    let a = c.req(&v::attach(token, secret, "127.0.0.1:1"));
    assert!(a[0].starts_with("ok"), "attach after the heal: {a:?}");
    let r = c.req(&Verb::ListGroups);
    if r[0].starts_with("err write_undone ") {
        let again = c.req(&Verb::ListGroups);
        assert!(again[0].starts_with("list"), "told once: {again:?}");
        return Some(r[0].clone());
    }
    assert!(r[0].starts_with("list"), "{r:?}");
    None
}

fn owner_of(cl: &Cluster, n: usize, user: &str, group: &str) -> String {
    let mut c = conn_as(cl, n, rand_u64());
    login(&mut c, user);
    let r = c.req(&Verb::ListGroups);
    c.ok(&Verb::Logout);
    r[1..]
        .iter()
        .find(|l| l.split(' ').next() == Some(group))
        .and_then(|l| l.split(' ').nth(2))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_cut_link_heals_with_every_acknowledged_write_at_both_trackers() {
    let (cl, fwd) = pair_through_forwarder();
    let (ia, ib, it1, it2) = (0xa1, 0xb2, 0xc1, 0xc2);
    let (mut alice, alice_token) = user_at(&cl, 1, ia, "alice");
    alice.ok(&v::create_group("shared"));
    let (mut bob, bob_token) = user_at(&cl, 2, ib, "bob");
    cl.wait_same_digest();

    fwd.cut();
    wait_both_solo(&cl);
    // Tracker 1's side: alice's writes and a new user; "dup" and "twin" are taken at both.
    let mut acked1 = 0;
    for g in ["a1", "a2", "dup"] {
        alice.ok(&v::create_group(g));
        acked1 += 1;
    }
    alice.upload("a1", "notes.txt", 700_000, 1);
    acked1 += 1;
    let mut t1 = conn_as(&cl, 1, it1);
    t1.ok(&v::create_user("twin", "pw-1"));
    t1.ok(&v::create_user("carol", "pw-carol"));
    acked1 += 2;
    // Tracker 2's side: more writes, so its log is the longer one and wins.
    let mut acked2 = 0;
    for g in ["b1", "b2", "b3", "dup"] {
        bob.ok(&v::create_group(g));
        acked2 += 1;
    }
    bob.ok(&v::join_group("shared"));
    let mut t2 = conn_as(&cl, 2, it2);
    t2.ok(&v::create_user("twin", "pw-2"));
    t2.ok(&v::create_user("dave", "pw-dave"));
    acked2 += 3;
    assert!(acked1 > 0 && acked2 > acked1);

    fwd.heal();
    wait_healed(&cl);
    let (winner, loser) = if cl.role(1) == "leader-paired" {
        (1, 2)
    } else {
        (2, 1)
    };
    assert_eq!((winner, loser), (2, 1), "the longer log (tracker 2's) wins");

    // Every write that conflicts with none is at both trackers.
    let want = ["a1", "a2", "b1", "b2", "b3", "dup", "shared"];
    for n in 1..=2 {
        assert_eq!(groups_at(&cl, n, "carol"), want, "groups at tracker {n}");
        assert_eq!(groups_at(&cl, n, "dave"), want, "dave exists at {n}");
    }
    let told_alice = next_command_told(&cl, loser, ia, &alice_token);
    let msg = told_alice.expect("alice's client is told that her dup was undone");
    assert!(
        msg.contains("create_group dup") && msg.contains("already exists"),
        "{msg}"
    );
    // The other writes of hers are there, at both trackers, with her file; bob's request to
    // join her group too.
    for n in 1..=2 {
        assert_eq!(
            files_at(&cl, n, "alice", "a1"),
            ["notes.txt"],
            "at tracker {n}"
        );
        let mut a = conn_as(&cl, n, rand_u64());
        login(&mut a, "alice");
        let reqs = a.req(&v::list_requests("shared"));
        assert_eq!(reqs[1..], ["bob".to_string()], "at tracker {n}");
        a.ok(&Verb::Logout);
    }
    assert_eq!(
        owner_of(&cl, loser, "dave", "dup"),
        "bob",
        "the winner's dup stays"
    );
    // The twin created at the loser is undone: only tracker 2's password works, at both, and
    // the instance that created the loser's twin is told.
    for n in 1..=2 {
        let mut c = conn_as(&cl, n, rand_u64());
        c.err(&v::login("twin", "pw-1", "127.0.0.1:1"), "bad_credentials");
        c.ok(&v::login("twin", "pw-2", "127.0.0.1:1"));
        c.ok(&Verb::Logout);
    }
    let mut c = conn_as(&cl, winner, it1);
    let r = c.req(&v::create_user("someone", "pw"));
    assert!(
        r[0].starts_with("err write_undone ") && r[0].contains("create_user twin"),
        "{r:?}"
    );
    c.ok(&v::create_user("someone", "pw"));
    // Nobody on the winning side is told anything.
    assert_eq!(next_command_told(&cl, winner, ib, &bob_token), None);
    let mut c = conn_as(&cl, winner, it2);
    c.ok(&v::create_user("someone-else", "pw"));
    cl.wait_same_digest();
}

#[test]
fn a_frozen_tracker_that_resumes_loses_none_of_the_writes_on_either_side() {
    let cl = Cluster::start(2);
    let leader = if cl.role(1) == "leader-paired" { 1 } else { 2 };
    let follower = 3 - leader;
    let (ia, ic) = (0xa1, 0xc3);
    let (mut alice, alice_token) = user_at(&cl, leader, ia, "alice");
    let (mut carol, _) = user_at(&cl, follower, ic, "carol");
    conn_as(&cl, follower, rand_u64()).ok(&v::create_user("eve", "pw-eve"));
    cl.wait_same_digest();

    cl.signal(leader, libc::SIGSTOP);
    let deadline = Instant::now() + WAIT;
    while cl.role(follower) != "leader-solo" {
        assert!(
            Instant::now() < deadline,
            "the follower never took over from a frozen leader"
        );
        thread::sleep(Duration::from_millis(100));
    }
    for g in ["f1", "f2", "f3", "f4", "dup2"] {
        carol.ok(&v::create_group(g));
    }
    // The frozen leader resumes with a write already waiting for it, and both sides write
    // while it notices it was left.
    alice.send_raw(b"101 create_group l1\n");
    cl.signal(leader, libc::SIGCONT);
    let r = alice.read_reply().expect("l1 answered");
    assert!(r[0].starts_with("ok"), "l1: {r:?}");
    // If the pair re-forms first, this tracker's clients are disconnected: then not acked.
    let dup2_at_leader =
        matches!(alice.try_req(&v::create_group("dup2")), Ok(r) if r[0].starts_with("ok"));
    carol.ok(&v::create_group("f5"));

    wait_healed(&cl);
    let want = ["dup2", "f1", "f2", "f3", "f4", "f5", "l1"];
    for n in 1..=2 {
        assert_eq!(groups_at(&cl, n, "eve"), want, "groups at tracker {n}");
    }
    assert_eq!(owner_of(&cl, leader, "eve", "dup2"), "carol");
    if dup2_at_leader {
        // Acknowledged to alice, undone by the heal: her client is told at its next command.
        let msg = next_command_told(&cl, follower, ia, &alice_token)
            .expect("alice's client is told her dup2 was undone");
        assert!(msg.contains("create_group dup2"), "{msg}");
    }
    cl.wait_same_digest();
}

#[test]
fn two_new_trackers_that_took_writes_before_they_met_keep_both_sides_writes() {
    let (cl, fwd) = start_through_forwarder(true);
    wait_both_solo(&cl);
    let (mut alice, alice_token) = user_at(&cl, 1, 0xa1, "alice");
    alice.ok(&v::create_group("from1"));
    alice.ok(&v::create_group("both"));
    let (mut bob, _) = user_at(&cl, 2, 0xb2, "bob");
    for g in ["from2", "both", "more2"] {
        bob.ok(&v::create_group(g));
    }
    conn_as(&cl, 2, rand_u64()).ok(&v::create_user("carol", "pw-carol"));
    fwd.heal();
    wait_healed(&cl);
    let want = ["both", "from1", "from2", "more2"];
    for n in 1..=2 {
        assert_eq!(groups_at(&cl, n, "carol"), want, "groups at tracker {n}");
    }
    // Tracker 2's log is the longer: tracker 1's "both" is undone, and alice is told.
    assert_eq!(owner_of(&cl, 1, "carol", "both"), "bob");
    let msg = next_command_told(&cl, 2, 0xa1, &alice_token).expect("alice is told");
    assert!(msg.contains("create_group both"), "{msg}");
}

#[test]
fn a_client_whose_write_was_undone_is_told_in_a_sentence_at_its_next_command() {
    let (cl, fwd) = pair_through_forwarder();
    let t1 = cl.addrs[0].to_string();
    let mut alice = cl.client_with("alice", &[&t1], &[]);
    alice.run("create_user alice s3cret", "created user alice");
    alice.run("login alice s3cret", "logged in as alice");
    cl.wait_same_digest();
    fwd.cut();
    wait_both_solo(&cl);
    alice.run("create_group dup", "created group dup");
    alice.run("create_group mine", "created group mine");
    let (mut bob, _) = user_at(&cl, 2, 0xb2, "bob");
    for g in ["dup", "b1", "b2", "b3"] {
        bob.ok(&v::create_group(g));
    }
    fwd.heal();
    wait_healed(&cl);
    let told = alice.run_err("list_groups", "create_group dup");
    assert!(
        told.contains("was undone (group dup already exists)") && told.contains("repeat it"),
        "{told}"
    );
    alice.send("list_groups");
    let mut names: Vec<String> = alice
        .sync()
        .iter()
        .filter_map(|l| l.split(' ').next().map(str::to_string))
        .collect();
    names.sort();
    assert_eq!(names, ["b1", "b2", "b3", "dup", "mine"]);
}
