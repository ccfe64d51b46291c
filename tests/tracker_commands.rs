//! Every client command and every refusal, over TCP against a real tracker.

mod common;
use common::*;

#[test]
fn every_command_and_refusal_on_one_tracker() {
    let cl = Cluster::start(1);
    let mut a = cl.conn(1);
    let mut b = cl.conn(1);
    let mut c = cl.conn(1);

    // Not logged in.
    for line in [
        "create_group g",
        "join_group g",
        "leave_group g",
        "list_requests g",
        "accept_request g x",
        "list_groups",
        "list_files g",
        "download_file g f",
        "peers g f",
        "have g f 0",
        "stop_share g f",
        "logout",
    ] {
        a.err(line, "not_logged_in");
    }
    assert_eq!(
        a.upload("g", "f", 10, 1)[0].split(' ').nth(1),
        Some("not_logged_in")
    );

    // Users and sessions.
    a.ok(&v::create_user("alice", "pw-alice"));
    a.err(&v::create_user("alice", "other"), "user_exists");
    a.err("create_user bad/name pw", "invalid_name");
    a.err(
        &v::login("alice", "wrong", "127.0.0.1:1"),
        "bad_credentials",
    );
    a.err(&v::login("nobody", "pw", "127.0.0.1:1"), "bad_credentials");
    a.login("alice");
    a.err(
        &v::login("alice", "pw-alice", "127.0.0.1:1"),
        "already_logged_in",
    );
    a.err(
        "login_begin alice 0123456789abcdef0123456789abcdef",
        "already_logged_in",
    );
    // A login without its login_begin on this connection proves nothing.
    b.err(
        &format!("login alice {} 127.0.0.1:2", "ab".repeat(32)),
        "bad_request",
    );
    // A correct login from another connection takes the session over: the old connection
    // is told and closed, the new one acts as alice.
    b.ok(&v::login("alice", "pw-alice", "127.0.0.1:2"));
    assert_eq!(
        a.read_line().expect("the takeover notice"),
        "0 err session_taken_over alice logged in from another client"
    );
    assert!(a.read_line().is_err(), "the old connection is closed");
    // And back: alice logs in on a fresh connection; bob takes the other one.
    let mut a = cl.conn(1);
    a.login("alice");
    assert!(b
        .read_line()
        .expect("notice")
        .contains("session_taken_over"));
    let mut b = cl.conn(1);
    b.user("bob");
    c.user("carol");

    // Groups.
    a.ok(&v::create_group("g"));
    b.err(&v::create_group("g"), "group_exists");
    a.err(&v::join_group("g"), "already_member");
    b.err(&v::join_group("nope"), "no_such_group");
    b.ok(&v::join_group("g"));
    b.err(&v::join_group("g"), "already_requested");
    b.err(&v::list_requests("g"), "not_owner");
    assert_eq!(a.req(&v::list_requests("g")), vec!["list 1", "bob"]);
    a.err(&v::accept_request("g", "carol"), "no_such_request");
    a.err(&v::accept_request("g", "zed"), "no_such_user");
    b.err(&v::accept_request("g", "bob"), "not_owner");
    a.ok(&v::accept_request("g", "bob"));
    assert_eq!(a.req(&v::list_requests("g")), vec!["list 0"]);
    let groups = c.req(&Verb::ListGroups);
    assert_eq!(groups[0], "list 1");
    assert!(groups[1].starts_with("g "), "{groups:?}");
    c.err(&v::list_files("g"), "not_member");

    // Files.
    assert_eq!(a.upload("g", "f1", 1_000_000, 1)[0], "ok new");
    assert_eq!(b.upload("g", "f1", 1_000_000, 1)[0], "ok seeder");
    assert!(b.upload("g", "f1", 1_000_000, 2)[0].starts_with("err content_mismatch"));
    assert!(c.upload("g", "f2", 10, 1)[0].starts_with("err not_member"));
    let files = a.req(&v::list_files("g"));
    assert_eq!(files.len(), 2);
    assert!(files[1].starts_with("f1 1000000 2"), "{files:?}");
    c.err(&v::download_file("g", "f1"), "not_member");
    a.err(&v::download_file("g", "nope"), "no_such_file");
    let d = a.req(&v::download_file("g", "f1"));
    assert!(d[0].starts_with("list 2 1000000 2"), "{d:?}");
    assert!(d[1].starts_with("h ") && d[1].len() == 2 + 80, "{d:?}");
    assert!(d[2].starts_with("p bob 127.0.0.1:1 all"), "{d:?}");
    // carol joins and reports a piece: she becomes a partial source.
    c.ok(&v::join_group("g"));
    a.ok(&v::accept_request("g", "carol"));
    c.ok(&v::have("g", "f1", &[0]));
    c.err(&v::have("g", "f1", &[5]), "bad_request");
    let p = a.req(&v::peers("g", "f1"));
    assert!(
        p.iter()
            .any(|l| l.starts_with(&format!("p carol 127.0.0.1:1 b80 {} ", c.client_key()))),
        "{p:?}"
    );
    c.ok(&v::stop_share("g", "f1"));
    c.err(&v::stop_share("g", "f1"), "not_seeder");
    c.err(&v::stop_share("g", "nope"), "no_such_file");
    a.ok(&v::stop_share("g", "f1"));
    b.ok(&v::stop_share("g", "f1"));
    assert_eq!(
        a.req(&v::list_files("g")),
        vec!["list 0"],
        "a file without seeders leaves the group"
    );

    // Leaving: ownership passes to the earliest-joined member; the last one deletes the group.
    assert_eq!(b.upload("g", "f3", 5, 3)[0], "ok new");
    a.ok(&v::leave_group("g"));
    a.err(&v::leave_group("g"), "not_member");
    assert_eq!(
        b.req(&v::list_requests("g")),
        vec!["list 0"],
        "bob owns g now"
    );
    b.ok(&v::leave_group("g"));
    assert_eq!(
        c.req(&v::list_files("g")),
        vec!["list 0"],
        "bob's share ended with his leaving"
    );
    c.ok(&v::leave_group("g"));
    assert_eq!(c.req(&Verb::ListGroups), vec!["list 0"]);

    // Logout and re-login; a dropped connection frees the user at once.
    a.ok(&Verb::Logout);
    a.err(&Verb::ListGroups, "not_logged_in");
    a.login("alice");
    drop(b);
    let mut b2 = cl.conn(1);
    b2.login("bob");
    b2.ok(&Verb::Ping);
}

#[test]
fn malformed_requests_get_clear_errors() {
    let cl = Cluster::start(1);
    let mut a = cl.conn(1);
    let r = a.req("frobnicate");
    assert!(
        r[0].starts_with("err unknown_command") && r[0].contains("frobnicate"),
        "{r:?}"
    );
    let r = a.req("join_group");
    assert!(r[0].contains("usage: join_group <group_id>"), "{r:?}");
    a.err("create_user a", "bad_request");
    a.err("hello zz 1", "bad_request");
    a.send_raw(b"no-tag here\n");
    assert!(a
        .read_line()
        .expect("reply")
        .starts_with("0 err bad_request"));
    a.ok(&Verb::Ping);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let cl = Cluster::start(1);
    pipeline_in_order(cl.conn(1));
}

/// At the follower, writes travel to the leader and back: a pipelined login must still see
/// the user created just before it, and replies must still come in order.
#[test]
fn pipelined_requests_at_the_follower_see_their_own_writes_in_order() {
    let cl = Cluster::start(2);
    let follower = if cl.role(2) == "follower" { 2 } else { 1 };
    pipeline_in_order(cl.conn(follower));
}

fn pipeline_in_order(mut a: Conn) {
    // create_user and login_begin pipelined: the login_begin must see the user (its salt).
    let begin = v::login_begin("pipe");
    let first = [v::create_user("pipe", "pw"), begin.clone()];
    let mut text = String::new();
    for (i, verb) in first.into_iter().enumerate() {
        text.push_str(&Request::new(i as u64 + 1, verb).encode());
        text.push('\n');
    }
    a.send_raw(text.as_bytes());
    assert!(matches!(a.read_typed().expect("reply"), (1, Reply::Ok(_))));
    let words = match a.read_typed().expect("reply") {
        (2, Reply::Ok(words)) => words,
        r => panic!("login_begin: {r:?}"),
    };
    let cb = a.channel_binding();
    let (_, _, proof) = prove("pipe", "pw", &begin, &words, cb).expect("salt, count, nonce");
    let mut reqs = vec![Verb::Login {
        user: "pipe".into(),
        proof,
        addr: "127.0.0.1:9".into(),
    }];
    reqs.extend((0..200).map(|i| v::create_group(&format!("pg{i}"))));
    reqs.push(Verb::ListGroups);
    let mut text = String::new();
    for (i, verb) in reqs.into_iter().enumerate() {
        text.push_str(&Request::new(i as u64 + 3, verb).encode());
        text.push('\n');
    }
    a.send_raw(text.as_bytes());
    for want in 3..=204u64 {
        let (tag, reply) = a.read_typed().expect("reply");
        assert_eq!(tag, want, "{reply:?}");
        match reply {
            Reply::Ok(_) => {}
            Reply::List { lines, .. } => assert_eq!(lines.len(), 200, "{lines:?}"),
            r => panic!("request {tag} refused: {r:?}"),
        }
    }
}

#[test]
fn no_plaintext_password_on_disk() {
    let cl = Cluster::start(2);
    let mut a = cl.conn(1);
    a.ok(&v::create_user("secretive", "Sup3rSecretPassw0rd"));
    let mut b = cl.conn(2);
    b.ok(&v::create_user("other2", "An0therSecretOne"));
    cl.wait_same_digest();
    for n in 1..=2 {
        let mut all = String::new();
        for entry in std::fs::read_dir(cl.data_dir(n)).expect("data dir") {
            let bytes = std::fs::read(entry.expect("entry").path()).expect("read");
            all.push_str(&String::from_utf8_lossy(&bytes));
        }
        assert!(!all.contains("Sup3rSecretPassw0rd") && !all.contains("An0therSecretOne"));
        // The users are on disk (so the check above looked at real data), as verifiers.
        assert!(
            all.contains("secretive") && all.contains("other2"),
            "tracker {n}"
        );
        assert!(all.contains("scram-sha256$4096$"), "tracker {n}");
    }
}

/// "A user whose client crashed or was killed can log in again at once": the old connection's
/// close may still be unread when the new login arrives; it must not be refused.
#[test]
fn a_user_whose_connection_dropped_logs_in_again_at_once() {
    let cl = Cluster::start(2);
    let mut setup = cl.conn(1);
    setup.ok(&v::create_user("phoenix", "pw"));
    for round in 0..40 {
        let n = 1 + round % 2;
        let mut old = cl.conn(n);
        old.ok(&v::login("phoenix", "pw", "127.0.0.1:1"));
        drop(old); // the socket closes: the tracker learns it asynchronously
        let mut new = cl.conn(n);
        let r = new.req(&v::login("phoenix", "pw", "127.0.0.1:2"));
        assert!(
            r[0].starts_with("ok "),
            "round {round} at tracker {n}: {r:?}"
        );
        new.ok(&Verb::Logout);
    }
}

/// `hello` names the tracker's KDF count; `create_user` with fewer iterations is refused, so a
/// client cannot weaken the policy; `login_begin` answers an unknown user like a known one.
#[test]
fn the_kdf_count_is_the_trackers_and_unknown_users_look_alike() {
    let mut cl = Cluster::new(1);
    cl.spawn_with(1, &["--kdf-iterations", "8192"]);
    cl.wait_serving(1);
    let mut a = cl.conn(1);
    // `ok <tracker_no> <kdf_iterations> <unix time>`.
    assert!(a.ok(&v::hello(7)).starts_with("ok 1 8192 "));
    a.err(&v::create_user_with("weak", "pw", 4096), "bad_request");
    a.ok(&v::create_user_with("strong", "pw", 8192));
    a.login_as("strong", "pw", "127.0.0.1:1");
    let mut b = cl.conn(1);
    let shape = |r: &Reply| match r {
        Reply::Ok(w) => (w.len(), w[0].len(), w[1].clone(), w[2].len()),
        r => panic!("login_begin refused: {r:?}"),
    };
    let known = b.typed(&v::login_begin("strong"));
    let unknown = b.typed(&v::login_begin("nobody"));
    assert_eq!(shape(&known), shape(&unknown));
    assert_eq!(shape(&unknown), (3, 32, "8192".to_string(), 32));
    // The decoy is stable per name, as a real user's salt is.
    let again = b.typed(&v::login_begin("nobody"));
    let salt = |r: &Reply| match r {
        Reply::Ok(w) => w[0].clone(),
        _ => String::new(),
    };
    assert_eq!(salt(&unknown), salt(&again));
    b.err(&v::login("nobody", "pw", "127.0.0.1:1"), "bad_credentials");
}
