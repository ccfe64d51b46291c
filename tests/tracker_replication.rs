//! The tracker pair: sync in both directions and start orders, kill -9 and catch-up, both
//! killed, concurrent conflicting writes, the authenticated peer link.

mod tracker_support;
use tracker_support::*;

#[test]
fn writes_at_either_tracker_are_visible_at_both() {
    let cl = Cluster::start(2);
    let mut a = cl.conn(1);
    let mut b = cl.conn(2);
    a.user("alice");
    b.user("bob");
    a.ok("create_group from1");
    b.ok("create_group from2");
    // Acknowledged means visible at once at the other tracker: no waiting here.
    let ga = a.req("list_groups");
    let gb = b.req("list_groups");
    assert_eq!(ga, gb);
    assert_eq!(ga.len(), 3, "{ga:?}");
    b.ok("join_group from1");
    assert_eq!(a.req("list_requests from1"), vec!["list 1", "bob"]);
    a.ok("accept_request from1 bob");
    assert_eq!(
        b.req("list_files from1"),
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
        a.ok("create_group early_group");
        a.ok("logout");
        cl.spawn(second);
        cl.wait_serving(second);
        cl.wait_paired();
        let mut b = cl.conn(second);
        b.login("early");
        assert_eq!(
            b.req("list_groups").len(),
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
        s.ok("create_group before");
        cl.kill(victim);
        // Writes while the victim is down, at the survivor (which may have to take over).
        s.ok("create_user u2 pw-u2");
        s.ok("create_group during");
        s.ok("logout");
        cl.spawn(victim);
        cl.wait_serving(victim);
        cl.wait_paired();
        let mut v = cl.conn(victim);
        v.login("u2");
        let groups = v.req("list_groups");
        assert_eq!(groups.len(), 3, "victim {victim}: {groups:?}");
        cl.wait_same_digest();
        // And writes still flow both ways afterwards.
        v.ok("create_group after");
        s.login("u1");
        assert_eq!(s.req("list_groups").len(), 4);
    }
}

#[test]
fn both_killed_recover_from_their_journals() {
    let mut cl = Cluster::start(2);
    let mut a = cl.conn(1);
    a.user("durable");
    for i in 0..20 {
        a.ok(&format!("create_group dg{i}"));
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
    assert_eq!(a.req("list_groups").len(), 21);
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
        let line_a = format!("1 create_user {name} pa\n");
        let line_b = format!("1 create_user {name} pb\n");
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
            c.ok(&format!("login {name} {pw} 127.0.0.1:1"));
            c.ok("logout");
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
    // An impostor without the key: the challenge cannot be answered.
    let mut y = Conn::connect(cl.addrs[0]).expect("connect");
    y.send_raw(b"peer-hello 2 0123456789abcdef0123456789abcdef\n");
    let challenge = y.read_line().expect("challenge");
    assert!(challenge.starts_with("peer-challenge "), "{challenge}");
    y.send_raw(format!("peer-auth {}\n", "00".repeat(32)).as_bytes());
    assert!(y.read_line().is_err(), "a wrong MAC closes the connection");
    // A peer-hello after ordinary requests is refused too.
    let mut z = cl.conn(1);
    z.send_raw(b"peer-hello 2 00\n");
    assert!(z.read_line().expect("reply").contains("err bad_request"));
    let mut c = cl.conn(1);
    c.err("login evil x 127.0.0.1:1", "bad_credentials");
    assert_eq!(cl.wait_same_digest(), before);
}

#[test]
fn a_session_moves_to_the_other_tracker_without_a_password() {
    for victim in [1usize, 2] {
        let mut cl = Cluster::start(2);
        let mut a = cl.conn(victim);
        a.ok("create_user mover pw");
        let token = a.ok("login mover pw 127.0.0.1:7");
        let token = token.split(' ').nth(1).expect("token").to_string();
        a.ok("create_group home");
        cl.kill(victim);
        let other = 3 - victim;
        cl.wait_serving(other);
        let mut b = cl.conn(other);
        assert_eq!(b.ok(&format!("attach {token} 127.0.0.1:8")), "ok mover");
        b.ok("create_group away");
        assert_eq!(b.req("list_groups").len(), 3);
        // A forged token is refused.
        let mut c = cl.conn(other);
        c.err(
            &format!("attach {} 127.0.0.1:9", "ab".repeat(16)),
            "no_session",
        );
    }
}
