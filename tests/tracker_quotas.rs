//! Quotas and rates over the real binaries: each refusal is one `err <code> <message>` (one
//! `error:` line at a client), changes nothing (the digest and the listings stay as they were),
//! and the flag that sets the limit raises it. Per-address rates are local to the tracker that
//! took the connection; quotas are the leader's and hold at both trackers alike.

mod common;

use common::{v, Cluster, Conn, Reply, Verb};
use std::time::Duration;

/// A pair whose trackers start with these flags; returns it linked, with the leader's number.
fn pair(flags1: &[&str], flags2: &[&str]) -> (Cluster, usize) {
    let mut cl = Cluster::new(2);
    cl.spawn_with(1, flags1);
    cl.spawn_with(2, flags2);
    cl.wait_serving(1);
    cl.wait_serving(2);
    cl.wait_paired();
    let leader = cl.paired_leader().expect("a paired leader");
    (cl, leader)
}

/// One tracker alone with these flags, serving.
fn single(flags: &[&str]) -> Cluster {
    let mut cl = Cluster::new(1);
    cl.spawn_with(1, flags);
    cl.wait_serving(1);
    cl
}

/// The reply's first line, which must be `err <code> ...`; returns it.
fn refused<R: common::RequestText + ?Sized>(c: &mut Conn, req: &R, code: &str) -> String {
    let r = c.req(req);
    assert!(
        r[0].starts_with(&format!("err {code} ")),
        "'{}' → {r:?}, expected err {code}",
        req.text()
    );
    r[0].clone()
}

fn list(c: &mut Conn, verb: &Verb) -> Vec<String> {
    match c.typed(verb) {
        Reply::List { lines, .. } => lines,
        r => panic!("{verb:?} → {r:?}"),
    }
}

#[test]
fn registrations_per_address_are_limited_at_the_tracker_that_took_them() {
    let one_a_minute = ["--registrations-per-minute", "1"];
    let (cl, _) = pair(
        &[&["--registration-burst", "3"][..], &one_a_minute].concat(),
        &[&["--registration-burst", "5"][..], &one_a_minute].concat(),
    );
    let mut a = cl.conn(1);
    for i in 0..3 {
        a.ok(&v::create_user(&format!("r{i}"), "pw"));
    }
    let before = cl.wait_same_digest();
    let line = refused(&mut a, &v::create_user("r3", "pw"), "rate_limited");
    assert!(
        line.contains("too many new users from your address; try again in"),
        "{line}"
    );
    // Another connection from the same address shares the bucket.
    refused(&mut cl.conn(1), &v::create_user("r3", "pw"), "rate_limited");
    assert_eq!(cl.wait_same_digest(), before, "a refusal changed nothing");
    refused(
        &mut cl.conn(1),
        &v::login("r3", "pw", "127.0.0.1:1"),
        "bad_credentials",
    );
    // The other tracker keeps its own count, and its flag allows five.
    let mut b = cl.conn(2);
    for i in 3..8 {
        b.ok(&v::create_user(&format!("r{i}"), "pw"));
    }
    refused(&mut b, &v::create_user("r8", "pw"), "rate_limited");
}

#[test]
fn failed_logins_per_address_close_logins_from_it_even_with_the_right_password() {
    let one_a_minute = ["--failed-logins-per-minute", "1"];
    let (cl, _) = pair(
        &[&["--failed-login-burst", "2"][..], &one_a_minute].concat(),
        &[&["--failed-login-burst", "4"][..], &one_a_minute].concat(),
    );
    let mut a = cl.conn(1);
    a.ok(&v::create_user("lock", "right"));
    for _ in 0..2 {
        refused(
            &mut a,
            &v::login("lock", "wrong", "127.0.0.1:1"),
            "bad_credentials",
        );
    }
    let before = cl.wait_same_digest();
    let line = refused(
        &mut a,
        &v::login("lock", "right", "127.0.0.1:1"),
        "rate_limited",
    );
    assert!(
        line.contains("too many failed logins from your address"),
        "{line}"
    );
    assert_eq!(cl.wait_same_digest(), before, "no session was made");
    // Tracker 2 counts its own failures, four of them.
    let mut b = cl.conn(2);
    for _ in 0..4 {
        refused(
            &mut b,
            &v::login("nobody", "x", "127.0.0.1:1"),
            "bad_credentials",
        );
    }
    refused(
        &mut b,
        &v::login("lock", "right", "127.0.0.1:1"),
        "rate_limited",
    );
    // A success costs nothing: at a fresh tracker with the default burst, many right logins
    // and logouts in a row all succeed.
    let solo = single(&[]);
    let mut c = solo.conn(1);
    c.ok(&v::create_user("fine", "pw"));
    for _ in 0..30 {
        c.ok(&v::login("fine", "pw", "127.0.0.1:1"));
        c.ok(&Verb::Logout);
    }
}

#[test]
fn groups_owned_per_user_follow_the_leaders_flag_at_both_trackers() {
    let (cl, leader) = pair(
        &["--max-groups-per-user", "2"],
        &["--max-groups-per-user", "2"],
    );
    let follower = 3 - leader;
    let mut f = cl.conn(follower);
    f.user("owner");
    f.ok(&v::create_group("g1"));
    f.ok(&v::create_group("g2"));
    let before = cl.wait_same_digest();
    let line = refused(&mut f, &v::create_group("g3"), "quota_exceeded");
    assert!(line.contains("you own 2 groups"), "{line}");
    assert_eq!(cl.wait_same_digest(), before);
    f.ok(&Verb::Logout);
    let mut l = cl.conn(leader);
    l.login("owner");
    let before = cl.wait_same_digest();
    refused(&mut l, &v::create_group("g3"), "quota_exceeded");
    assert_eq!(cl.wait_same_digest(), before);
    assert_eq!(list(&mut l, &Verb::ListGroups).len(), 2);
    // Another user is not affected.
    l.ok(&Verb::Logout);
    l.user("other");
    l.ok(&v::create_group("g3"));
}

#[test]
fn a_follower_checks_with_the_leaders_quotas_not_its_own() {
    let mut cl = Cluster::new(2);
    cl.spawn_with(1, &["--max-groups-per-user", "1"]);
    cl.spawn_with(2, &["--max-groups-per-user", "5"]);
    cl.wait_serving(1);
    cl.wait_serving(2);
    cl.wait_paired();
    let leader = cl.paired_leader().expect("paired");
    let allowed = if leader == 1 { 1 } else { 5 };
    for n in [1, 2] {
        let mut c = cl.conn(n);
        c.user(&format!("u{n}"));
        for i in 0..allowed {
            c.ok(&v::create_group(&format!("t{n}g{i}")));
        }
        refused(
            &mut c,
            &v::create_group(&format!("t{n}g{allowed}")),
            "quota_exceeded",
        );
    }
    cl.wait_same_digest();
}

#[test]
fn the_flag_raises_the_groups_per_user_quota() {
    let cl = single(&["--max-groups-per-user", "1500"]);
    let mut a = cl.conn(1);
    a.user("many");
    // Beyond the default of 1,000, pipelined to keep it quick.
    let mut text = String::new();
    for i in 0..1001u64 {
        text.push_str(&common::Request::new(1000 + i, v::create_group(&format!("m{i}"))).encode());
        text.push('\n');
    }
    a.send_raw(text.as_bytes());
    for _ in 0..1001 {
        let (_, r) = a.read_typed().expect("reply");
        assert!(matches!(r, Reply::Ok(_)), "{r:?}");
    }
    assert_eq!(list(&mut a, &Verb::ListGroups).len(), 1001);
}

#[test]
fn files_per_group_are_limited_and_the_flag_raises_it() {
    let (cl, leader) = pair(
        &["--max-files-per-group", "1"],
        &["--max-files-per-group", "1"],
    );
    let mut a = cl.conn(leader);
    a.user("alice");
    a.ok(&v::create_group("g"));
    assert!(a.upload("g", "one", 1000, 1)[0].starts_with("ok"));
    let before = cl.wait_same_digest();
    let r = a.upload("g", "two", 1000, 2);
    assert!(
        r[0].starts_with("err quota_exceeded group g already has 1 file"),
        "{r:?}"
    );
    // The connection is in step: the hash lines were read with the refused request.
    assert_eq!(list(&mut a, &v::list_files("g")).len(), 1);
    assert_eq!(cl.wait_same_digest(), before);
    // One more seeder of the same file is not a new file.
    let mut b = cl.conn(3 - leader);
    b.user("bob");
    b.ok(&v::join_group("g"));
    a.ok(&v::accept_request("g", "bob"));
    assert!(b.upload("g", "one", 1000, 1)[0].starts_with("ok seeder"));

    let raised = single(&["--max-files-per-group", "2"]);
    let mut c = raised.conn(1);
    c.user("carol");
    c.ok(&v::create_group("g"));
    assert!(c.upload("g", "one", 1000, 1)[0].starts_with("ok"));
    assert!(c.upload("g", "two", 1000, 2)[0].starts_with("ok"));
    assert!(c.upload("g", "three", 1000, 3)[0].starts_with("err quota_exceeded"));
}

#[test]
fn pending_join_requests_per_group_are_limited_and_the_flag_raises_it() {
    for (flag, allowed) in [("1", 1), ("3", 3)] {
        let cl = single(&["--max-requests-per-group", flag]);
        let mut owner = cl.conn(1);
        owner.user("owner");
        owner.ok(&v::create_group("g"));
        for i in 0..allowed {
            let mut c = cl.conn(1);
            c.user(&format!("asker{i}"));
            c.ok(&v::join_group("g"));
        }
        let before = cl.wait_same_digest();
        let mut late = cl.conn(1);
        late.user("late");
        let after_user = cl.wait_same_digest();
        assert_ne!(before, after_user);
        let line = refused(&mut late, &v::join_group("g"), "quota_exceeded");
        assert!(line.contains("pending join request"), "{line}");
        assert_eq!(cl.wait_same_digest(), after_user);
        assert_eq!(list(&mut owner, &v::list_requests("g")).len(), allowed);
        // Accepting one makes room.
        owner.ok(&v::accept_request("g", "asker0"));
        late.ok(&v::join_group("g"));
    }
}

#[test]
fn the_state_budget_refuses_users_groups_files_and_pieces_beyond_it() {
    let cl = single(&[
        "--max-users",
        "2",
        "--max-groups",
        "2",
        "--max-files",
        "3",
        "--max-state-pieces",
        "6",
    ]);
    let mut a = cl.conn(1);
    a.user("a");
    cl.conn(1).user("b");
    let mut d = cl.wait_same_digest();
    let line = refused(&mut cl.conn(1), &v::create_user("c", "pw"), "tracker_full");
    assert!(
        line.contains("holds 2 users") && line.contains("--max-users"),
        "{line}"
    );
    assert_eq!(cl.wait_same_digest(), d);

    a.ok(&v::create_group("g1"));
    a.ok(&v::create_group("g2"));
    d = cl.wait_same_digest();
    let line = refused(&mut a, &v::create_group("g3"), "tracker_full");
    assert!(line.contains("--max-groups"), "{line}");
    assert_eq!(cl.wait_same_digest(), d);
    assert_eq!(list(&mut a, &Verb::ListGroups).len(), 2);

    const PIECE: u64 = 512 * 1024;
    assert!(a.upload("g1", "four", 4 * PIECE, 1)[0].starts_with("ok"));
    d = cl.wait_same_digest();
    let r = a.upload("g2", "three", 3 * PIECE, 2);
    assert!(
        r[0].starts_with("err tracker_full ") && r[0].contains("--max-state-pieces"),
        "{r:?}"
    );
    assert_eq!(cl.wait_same_digest(), d);
    assert!(a.upload("g2", "two", 2 * PIECE, 3)[0].starts_with("ok"));
    assert!(a.upload("g2", "empty", 0, 0)[0].starts_with("ok"));
    d = cl.wait_same_digest();
    let r = a.upload("g1", "another_empty", 0, 0);
    assert!(
        r[0].starts_with("err tracker_full ") && r[0].contains("--max-files"),
        "{r:?}"
    );
    assert_eq!(cl.wait_same_digest(), d);
    assert_eq!(list(&mut a, &v::list_files("g1")).len(), 1);
    assert_eq!(list(&mut a, &v::list_files("g2")).len(), 2);
}

#[test]
fn the_flag_raises_the_user_budget() {
    let cl = single(&["--max-users", "3"]);
    let mut a = cl.conn(1);
    for u in ["a", "b", "c"] {
        a.ok(&v::create_user(u, "pw"));
    }
    refused(&mut a, &v::create_user("d", "pw"), "tracker_full");
}

/// Tracker `n`'s resident memory in KiB, from /proc.
fn rss_kib(cl: &Cluster, n: usize) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", cl.pid(n))).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[test]
fn hash_lines_are_not_kept_before_login_and_the_connection_stays_in_step() {
    let cl = single(&[]);
    let npieces: u64 = 500 * 1024; // 10 MB of hashes if they were kept
                                   // Raw bytes inside the secure channel, as a client of no session sends them.
    let mut raw = Conn::connect(cl.addrs[0]).expect("connect");
    let req = common::Request::new(
        1,
        Verb::UploadFile {
            group: "g".into(),
            file: "f".into(),
            size: npieces * 512 * 1024,
            npieces,
        },
    );
    let line = format!("{}\n", req.encode());
    raw.send_raw(line.as_bytes());
    let before = rss_kib(&cl, 1);
    let hash_line = format!("{}\n", "ab".repeat(20 * 1024));
    let nlines = npieces / 1024;
    // All but the last line: a tracker that kept them would hold them now.
    for _ in 0..nlines - 1 {
        raw.send_raw(hash_line.as_bytes());
    }
    // The tracker reads as fast as the bytes come; what the socket buffers still held when
    // the writes returned is read well within this pause.
    std::thread::sleep(Duration::from_millis(500));
    let grown = rss_kib(&cl, 1).saturating_sub(before);
    assert!(
        grown < 4 * 1024,
        "the tracker grew by {grown} KiB while reading hash lines of no session"
    );
    raw.send_raw(hash_line.as_bytes());
    raw.send_raw(b"2 ping\n");
    let mut got = String::new();
    for _ in 0..8 {
        let line = raw.read_line().expect("a reply line");
        got.push_str(&line);
        got.push('\n');
        if line == "2 ok pong" {
            break;
        }
    }
    assert!(got.starts_with("1 err not_logged_in "), "{got}");
    assert!(got.ends_with("2 ok pong\n"), "{got}");
}

#[test]
fn a_client_shows_each_refusal_as_one_error_line() {
    let cl = single(&[
        "--max-groups-per-user",
        "1",
        "--registration-burst",
        "2",
        "--registrations-per-minute",
        "1",
        "--failed-login-burst",
        "1",
        "--failed-logins-per-minute",
        "1",
    ]);
    let mut a = cl.client("alice");
    a.run("create_user alice pw", "created user alice");
    a.run("login alice pw", "logged in as alice");
    a.run("create_group g1", "created group g1");
    let e = a.run_err("create_group g2", "error: ");
    assert_eq!(
        e,
        "error: you own 1 group, the most one user may own; leave one to create another"
    );
    a.run("create_user bob pw", "created user bob");
    let e = a.run_err("create_user carol pw", "error: ");
    assert!(
        e.starts_with("error: too many new users from your address; try again in "),
        "{e}"
    );
    a.run("logout", "logged out");
    a.run_err("login bob wrong", "error: wrong user id or password");
    let e = a.run_err("login bob pw", "error: ");
    assert!(
        e.starts_with("error: too many failed logins from your address; try again in "),
        "{e}"
    );
    a.sync();
    assert_eq!(a.errors().len(), 4, "{:?}", a.errors());
    assert!(
        a.sync().is_empty(),
        "nothing on standard output for the refusals"
    );
}

#[test]
fn quotas_survive_a_restart_and_a_restart_with_a_raised_flag_raises_them() {
    let mut cl = single(&["--max-users", "1"]);
    cl.conn(1).ok(&v::create_user("first", "pw"));
    cl.kill(1);
    cl.spawn_with(1, &["--max-users", "1"]);
    cl.wait_serving(1);
    let d = cl.wait_same_digest();
    refused(
        &mut cl.conn(1),
        &v::create_user("second", "pw"),
        "tracker_full",
    );
    assert_eq!(cl.wait_same_digest(), d);
    cl.kill(1);
    cl.spawn_with(1, &["--max-users", "2"]);
    cl.wait_serving(1);
    cl.conn(1).ok(&v::create_user("second", "pw"));
    refused(
        &mut cl.conn(1),
        &v::create_user("third", "pw"),
        "tracker_full",
    );
}
