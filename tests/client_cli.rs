//! End-to-end tests of the terminal client against real trackers and real peers.

mod common;

use common::{test_data, Cluster, WAIT};
use std::time::Duration;

#[test]
fn the_command_set_and_its_refusals() {
    let c = Cluster::start(2);
    let mut a = c.client("alice");
    let mut b = c.client("bob");

    // Refused locally, before any tracker is asked.
    a.run_err("frobnicate x", "'frobnicate'");
    a.run_err("login alice", "usage: login <user_id> <password>");
    a.run_err("create_group bad/name", "group id");
    a.run_err("list_groups", "not logged in");

    a.run("create_user alice pw1", "created user alice");
    a.run_err("create_user alice pw1", "already taken");
    a.run_err("login alice nope", "wrong user id or password");
    a.run("login alice pw1", "logged in as alice");
    a.run_err("upload_file /no/such/file g1", "does not exist");
    a.run_err("login alice pw1", "already logged in");
    a.run("create_group g1", "created group g1");
    a.run_err("create_group g1", "already exists");
    a.run("list_groups", "g1");
    a.sync();
    a.send("list_requests g1");
    assert!(
        a.sync().is_empty(),
        "no requests yet: empty listing prints nothing"
    );

    b.run("create_user bob pw2", "created user bob");
    // A wrong password disturbs nobody (a right one takes the session over: see
    // a_new_login_takes_over_the_session_of_a_frozen_client).
    b.run_err("login alice nope", "wrong user id or password");
    b.run("login bob pw2", "logged in as bob");
    b.run_err("list_files g1", "not a member");
    b.run_err("join_group nosuch", "no group named 'nosuch'");
    b.run("join_group g1", "asked to join group g1");
    b.run_err("join_group g1", "already asked");
    b.run_err("list_requests g1", "only the owner");

    a.run("list_requests g1", "bob");
    a.run_err("accept_request g1 carol", "carol");
    a.run("accept_request g1 bob", "bob is now a member of group g1");

    let file = c.path().join("notes one.txt");
    std::fs::write(&file, b"hello, group").unwrap();
    // A quoted path may hold spaces, but a shared file's name may not.
    a.run_err(
        &format!("upload_file \"{}\" g1", file.display()),
        "file name",
    );
    let file = c.path().join("notes.txt");
    std::fs::write(&file, b"hello, group").unwrap();
    a.run(
        &format!("upload_file {} g1", file.display()),
        "uploaded notes.txt to g1",
    );
    b.run("list_files g1", "notes.txt");
    b.run_err("stop_share g1 notes.txt", "do not share");
    b.run_err(
        &format!("download_file g1 notes.txt {}", file.display()),
        "already exists",
    );
    b.run_err(
        "download_file g1 nothing.txt /tmp",
        "no file named 'nothing.txt'",
    );

    a.run(
        "stop_share g1 notes.txt",
        "stopped sharing notes.txt in group g1",
    );
    b.sync();
    b.send("list_files g1");
    assert!(
        b.sync().is_empty(),
        "a file without seeders leaves the group"
    );

    b.run("leave_group g1", "left group g1");
    b.run_err("list_files g1", "not a member");
    b.sync();
    b.send("show_downloads");
    assert!(b.sync().is_empty(), "no downloads: nothing printed");
    b.run("logout", "logged out");
    b.run_err("list_groups", "not logged in");

    a.send("exit");
    assert!(
        a.wait_exit(WAIT).is_some_and(|s| s.success()),
        "exit ends the client"
    );
    b.close_stdin();
    assert!(
        b.wait_exit(WAIT).is_some_and(|s| s.success()),
        "end of input ends the client"
    );
    assert!(b.errors().len() >= 7);
}

/// Sets up alice (owner of g, sharing `name` with `data`) and bob (member of g).
fn two_members(
    c: &Cluster,
    name: &str,
    data: &[u8],
) -> (common::Client, common::Client, std::path::PathBuf) {
    let mut a = c.client("alice");
    let mut b = c.client("bob");
    a.run("create_user alice pw", "created user alice");
    a.run("login alice pw", "logged in as alice");
    a.run("create_group g", "created group g");
    b.run("create_user bob pw", "created user bob");
    b.run("login bob pw", "logged in as bob");
    b.run("join_group g", "asked to join");
    a.run("accept_request g bob", "now a member");
    let src = c.path().join(name);
    std::fs::write(&src, data).unwrap();
    a.run(
        &format!("upload_file {} g", src.display()),
        &format!("uploaded {name} to g"),
    );
    (a, b, src)
}

#[test]
fn a_download_from_one_seeder() {
    let c = Cluster::start(2);
    let data = test_data(3 * 512 * 1024 + 1234, 7);
    let (_a, mut b, _src) = two_members(&c, "big.bin", &data);
    let dest = c.path().join("downloads");
    std::fs::create_dir(&dest).unwrap();
    b.run(
        &format!("download_file g big.bin {}", dest.display()),
        "downloading big.bin from g",
    );
    b.expect_err("note: download of big.bin complete");
    assert_eq!(std::fs::read(dest.join("big.bin")).unwrap(), data);
    b.run("show_downloads", "[C] [g] big.bin");
    // The downloader is now a seeder too.
    b.run("list_files g", "2 seeders");
    b.run_err(
        &format!("download_file g big.bin {}", dest.display()),
        "already exists",
    );
    assert!(b.errors().len() == 1, "{:?}", b.errors());
}

#[test]
fn shares_resume_after_logout_login_and_after_a_restart() {
    let c = Cluster::start(2);
    let data = test_data(700_000, 3);
    let (mut a, mut b, src) = two_members(&c, "doc.bin", &data);
    let other = c.path().join("other.bin");
    std::fs::write(&other, b"will change").unwrap();
    a.run(
        &format!("upload_file {} g", other.display()),
        "uploaded other.bin",
    );

    a.run("logout", "logged out");
    a.run("login alice pw", "logged in as alice (resumed 2 shares)");

    // Restart the client: the shares come back at login, without hashing again.
    a.send("exit");
    assert!(a.wait_exit(WAIT).is_some());
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(&other, b"has changed now").unwrap();
    let mut a = c.client("alice");
    a.run("login alice pw", "logged in as alice (resumed 1 share)");
    let w = a.expect_err("warning: ");
    assert!(w.contains("other.bin"), "{w}");

    // The resumed share serves a download.
    let dest = c.path().join("copy.bin");
    b.run(
        &format!("download_file g doc.bin {}", dest.display()),
        "downloading doc.bin",
    );
    b.expect_err("note: download of doc.bin complete");
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    b.run("list_files g", "doc.bin");
    b.sync();
    b.send("list_files g");
    let files = b.sync();
    assert_eq!(files.len(), 1, "the changed file left the group: {files:?}");
    let _ = src;
}

#[test]
fn a_tracker_killed_mid_session_is_replaced_without_a_new_login() {
    let mut c = Cluster::start(2);
    // The first argument names tracker 1: prefer it, listen on a free port.
    let t1 = c.addrs[0].to_string();
    let mut a = c.client_with("alice", &[&t1], &[]);
    a.expect_err("preferring that tracker");
    a.run("create_user alice pw", "created user alice");
    a.run("login alice pw", "logged in as alice");
    a.run("create_group before", "created group before");
    c.kill(1);
    a.run("create_group after", "created group after");
    a.run("list_groups", "after");
    let notes: Vec<_> = a
        .err_seen
        .iter()
        .filter(|l| l.starts_with("note: switched"))
        .cloned()
        .collect();
    assert!(
        notes.len() <= 1,
        "at most one note about the switch: {notes:?}"
    );
    assert!(a.errors().is_empty(), "{:?}", a.errors());
    // Tracker 1 comes back; killing tracker 2 moves the client back, still logged in.
    c.restart(1);
    std::thread::sleep(Duration::from_millis(500));
    c.kill(2);
    a.run("create_group again", "created group again");
    a.run("list_groups", "again");
    assert!(a.errors().is_empty(), "{:?}", a.errors());
}

#[test]
fn a_command_in_flight_when_its_tracker_dies_is_carried_out_once() {
    let mut c = Cluster::start(2);
    let t1 = c.addrs[0].to_string();
    let mut a = c.client_with("alice", &[&t1], &[]);
    a.run("create_user alice pw", "created user alice");
    a.run("login alice pw", "logged in as alice");
    // Freeze tracker 1 so the request is on the wire and unanswered, then kill it.
    c.signal(1, libc::SIGSTOP);
    a.send("create_group inflight");
    std::thread::sleep(Duration::from_millis(300));
    c.kill(1);
    a.expect_out("created group inflight");
    a.run_err("create_group inflight", "already exists");
    a.run("list_groups", "inflight");
    assert_eq!(a.errors().len(), 1, "{:?}", a.errors());
}

#[test]
fn end_of_input_waits_for_downloads_and_serve_keeps_seeding_until_sigterm() {
    let c = Cluster::start(2);
    let data = test_data(2 * 512 * 1024 + 5, 11);
    let mut a = c.client_with("alice", &["127.0.0.1:0"], &["--serve"]);
    let mut b = c.client("bob");
    a.run("create_user alice pw", "created user alice");
    a.run("login alice pw", "logged in as alice");
    a.run("create_group g", "created group g");
    b.run("create_user bob pw", "created user bob");
    b.run("login bob pw", "logged in as bob");
    b.run("join_group g", "asked");
    a.run("accept_request g bob", "now a member");
    let src = c.path().join("s.bin");
    std::fs::write(&src, &data).unwrap();
    a.run(
        &format!("upload_file {} g", src.display()),
        "uploaded s.bin",
    );
    a.close_stdin();
    // With --serve, end of input does not end the client: it keeps seeding.
    assert!(a.wait_exit(Duration::from_millis(500)).is_none());

    let dest = c.path().join("out.bin");
    b.send(&format!("download_file g s.bin {}", dest.display()));
    b.close_stdin();
    // End of input: bob finishes the download, then logs out and exits.
    assert!(
        b.wait_exit(WAIT).is_some_and(|s| s.success()),
        "bob exits after the download"
    );
    assert!(
        b.err_seen
            .iter()
            .any(|l| l.contains("download of s.bin complete")),
        "{:?}",
        b.err_seen
    );
    assert_eq!(std::fs::read(&dest).unwrap(), data);

    signal_and_wait(&mut a);
    // Logged out: alice may log in again at once, and her share resumes.
    let mut a2 = c.client("alice");
    a2.run("login alice pw", "logged in as alice (resumed 1 share)");
}

/// SIGTERM ends a client cleanly (exit status 0), logging it out.
fn signal_and_wait(cl: &mut common::Client) {
    common::signal(&cl.child, libc::SIGTERM);
    let st = cl.wait_exit(WAIT).expect("the client exits on SIGTERM");
    assert!(st.success(), "clean exit on SIGTERM: {st:?}");
}

#[test]
fn a_download_with_no_source_online_waits_for_one() {
    let c = Cluster::start(2);
    let data = test_data(900_000, 5);
    let (mut a, mut b, _src) = two_members(&c, "late.bin", &data);
    // The only seeder goes offline: its share pauses, the file stays listed.
    a.run("logout", "logged out");
    b.run("list_files g", "late.bin");
    let dest = c.path().join("late copy.bin");
    b.run(
        &format!("download_file g late.bin \"{}\"", dest.display()),
        "downloading late.bin",
    );
    b.run("show_downloads", "[D] [g] late.bin");
    assert!(!dest.exists());
    // The seeder comes back; the waiting download finds it.
    a.run("login alice pw", "resumed 1 share");
    b.expect_err("note: download of late.bin complete");
    assert_eq!(std::fs::read(&dest).unwrap(), data);
}

/// One live client per user, and nobody locked out: a correct login from a new client takes
/// over the session of a frozen one (SIGSTOP: its connection stays open, it answers nothing);
/// the old client, resumed, says it was logged out and does not log in again by itself.
#[test]
fn a_new_login_takes_over_the_session_of_a_frozen_client() {
    let c = Cluster::start(2);
    let mut a = c.client("alice");
    a.run("create_user alice pw", "created user alice");
    a.run("login alice pw", "logged in as alice");
    a.run("create_group g1", "created group g1");
    common::signal(&a.child, libc::SIGSTOP);
    let mut b = c.client("alice-laptop");
    b.run_err("login alice wrong", "wrong user id or password");
    b.run("login alice pw", "logged in as alice");
    b.run("list_groups", "g1");
    common::signal(&a.child, libc::SIGCONT);
    a.expect_err("note: you were logged out: alice logged in from another client");
    a.run_err("list_groups", "not logged in");
    // The old client did not take the session back: the new one still acts as alice.
    b.run("create_group g2", "created group g2");
    b.run("list_groups", "g2");
}
