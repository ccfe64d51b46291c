//! How client commands interact with each other and with downloads in progress, over the real
//! binaries: an empty file, `upload_file` of a download's `.part`, `stop_share` and
//! `leave_group` while a download of that file runs, another user logging in on the same
//! client while a download runs. Seeders run with `--upload-limit` so a download lasts a few
//! seconds; the tests wait on output, never on a clock.

mod common;

use common::{test_data, v, Client, Cluster, Conn, WAIT};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const PIECE: usize = 512 * 1024;

/// alice owns `g` (her client uses `alice_extra`); every name in `members` is a member with a
/// client of its own, logged in.
fn group(c: &Cluster, alice_extra: &[&str], members: &[&str]) -> (Client, Vec<Client>) {
    let mut a = c.client_with("alice", &["127.0.0.1:0"], alice_extra);
    a.run("create_user alice pw", "created user alice");
    a.run("login alice pw", "logged in as alice");
    a.run("create_group g", "created group g");
    let mut out = Vec::new();
    for name in members {
        let mut m = c.client(name);
        m.run(&format!("create_user {name} pw"), "created user");
        m.run(&format!("login {name} pw"), "logged in as");
        m.run("join_group g", "asked to join");
        a.run(&format!("accept_request g {name}"), "now a member");
        out.push(m);
    }
    (a, out)
}

/// Writes `data` as `name` in alice's own directory and shares it in `g`.
fn share(c: &Cluster, a: &mut Client, name: &str, data: &[u8]) -> PathBuf {
    let dir = c.path().join("files-alice");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, data).unwrap();
    a.run(
        &format!("upload_file {} g", path.display()),
        &format!("uploaded {name} to g"),
    );
    path
}

fn dir(c: &Cluster, name: &str) -> PathBuf {
    let d = c.path().join(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A raw tracker connection of a fresh member `user` of `g` (admitted by `owner`), for asking
/// the tracker what it knows (`peers`).
fn observer(c: &Cluster, owner: &mut Client, user: &str) -> Conn {
    let mut conn = c.conn(1);
    conn.user(user);
    conn.ok(&v::join_group("g"));
    owner.run(&format!("accept_request g {user}"), "now a member");
    conn
}

/// The users the tracker names as sources of `file` in `g` (seeders and partial sources).
fn sources(conn: &mut Conn, file: &str) -> Vec<String> {
    let r = conn.req(&v::peers("g", file));
    assert!(r[0].starts_with("list"), "peers: {r:?}");
    r[1..]
        .iter()
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect()
}

/// Polls `show_downloads` (bounded) until the line of `file` satisfies `ok`; returns it.
fn wait_download(d: &mut Client, file: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let lines = d.show_downloads();
        if let Some(l) = lines.iter().find(|l| l.contains(&format!("] {file}"))) {
            if ok(l) {
                return l.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "{file}: no matching show_downloads line: {lines:?}"
        );
        std::thread::sleep(Duration::from_millis(40));
    }
}

fn running_with_pieces(l: &str) -> bool {
    l.starts_with("[D]") && !l.contains(" 0/")
}

#[test]
fn an_empty_file_downloaded_makes_one_more_seeder() {
    let c = Cluster::start(2);
    let (mut a, mut ms) = group(&c, &[], &["bob"]);
    let b = &mut ms[0];
    share(&c, &mut a, "empty.txt", b"");
    let down = dir(&c, "down");
    b.run(
        &format!("download_file g empty.txt {}", down.display()),
        "downloading empty.txt",
    );
    b.expect_err("note: download of empty.txt complete");
    assert_eq!(std::fs::read(down.join("empty.txt")).unwrap(), b"");
    b.run("list_files g", "empty.txt  0 B  2 seeders");
    // Alice stops; bob's copy keeps the file in the group.
    a.run("stop_share g empty.txt", "stopped sharing");
    b.run("list_files g", "empty.txt  0 B  1 seeder");
    assert!(b.errors().is_empty(), "{:?}", b.errors());
}

#[test]
fn the_part_file_of_a_running_download_cannot_be_uploaded() {
    let c = Cluster::start(2);
    let (mut a, mut ms) = group(&c, &["--upload-limit", "256K"], &["bob"]);
    let b = &mut ms[0];
    share(&c, &mut a, "big.bin", &test_data(8 * PIECE, 1));
    let down = dir(&c, "down");
    b.run(
        &format!("download_file g big.bin {}", down.display()),
        "downloading big.bin",
    );
    b.run_err(
        &format!("upload_file {} g", down.join("big.bin.part").display()),
        "unfinished download of big.bin",
    );
    b.sync();
    b.send("list_files g");
    let files = b.sync();
    assert_eq!(files.len(), 1, "nothing new was shared: {files:?}");
}

#[test]
fn stop_share_while_downloading_means_the_finished_file_is_not_shared() {
    let c = Cluster::start(2);
    let (mut a, mut ms) = group(&c, &["--upload-limit", "1M"], &["bob"]);
    let b = &mut ms[0];
    let data = test_data(6 * PIECE, 2);
    share(&c, &mut a, "f.bin", &data);
    let mut eve = observer(&c, &mut a, "eve");
    let down = dir(&c, "down");
    b.run(
        &format!("download_file g f.bin {}", down.display()),
        "downloading f.bin",
    );
    // Whether or not bob's first pieces were announced yet, this succeeds.
    b.run("stop_share g f.bin", "stopped sharing f.bin in group g");
    b.expect_err("note: download of f.bin complete");
    assert_eq!(std::fs::read(down.join("f.bin")).unwrap(), data);
    b.sync();
    assert_eq!(sources(&mut eve, "f.bin"), ["alice"], "bob is not a source");
    b.run("list_files g", "f.bin  3.0 MiB  1 seeder");
    // Nor after a new login: the share was not remembered.
    b.run("logout", "logged out");
    let l = b.run("login bob pw", "logged in as bob");
    assert_eq!(l, "logged in as bob");
    b.run("list_files g", "f.bin  3.0 MiB  1 seeder");
    assert!(b.errors().is_empty(), "{:?}", b.errors());
}

#[test]
fn stop_share_after_pieces_were_announced_keeps_the_tracker_right() {
    let c = Cluster::start(2);
    let (mut a, mut ms) = group(&c, &["--upload-limit", "1M"], &["bob"]);
    let b = &mut ms[0];
    let data = test_data(6 * PIECE, 5);
    share(&c, &mut a, "f.bin", &data);
    let mut eve = observer(&c, &mut a, "eve");
    let down = dir(&c, "down");
    b.run(
        &format!("download_file g f.bin {}", down.display()),
        "downloading f.bin",
    );
    // Bob is a partial source at the tracker, then stops sharing.
    let deadline = Instant::now() + WAIT;
    while !sources(&mut eve, "f.bin").contains(&"bob".to_string()) {
        assert!(Instant::now() < deadline, "bob never became a source");
        std::thread::sleep(Duration::from_millis(40));
    }
    b.run("stop_share g f.bin", "stopped sharing f.bin in group g");
    b.expect_err("note: download of f.bin complete");
    b.sync();
    // Without the fix the later pieces were announced again: a partial source that no
    // longer serves anything.
    assert_eq!(sources(&mut eve, "f.bin"), ["alice"]);
    assert!(b.errors().is_empty(), "{:?}", b.errors());
}

#[test]
fn leaving_a_group_stops_its_downloads_and_keeps_the_part() {
    let c = Cluster::start(2);
    let (mut a, mut ms) = group(&c, &["--upload-limit", "1M"], &["bob"]);
    let b = &mut ms[0];
    let data = test_data(6 * PIECE, 3);
    share(&c, &mut a, "f.bin", &data);
    let down = dir(&c, "down");
    b.run(
        &format!("download_file g f.bin {}", down.display()),
        "downloading f.bin",
    );
    wait_download(b, "f.bin", running_with_pieces);
    b.run(
        "leave_group g",
        "left group g (stopped downloading f.bin; the .part is kept)",
    );
    let l = wait_download(b, "f.bin", |l| l.starts_with("[F]"));
    assert_eq!(l, "[F] [g] f.bin you left group g");
    assert!(!down.join("f.bin").exists());
    assert!(down.join("f.bin.part").exists());
    // Back in the group, the same download resumes from the .part.
    b.run("join_group g", "asked to join");
    a.run("accept_request g bob", "now a member");
    b.run(
        &format!("download_file g f.bin {}", down.display()),
        "downloading f.bin",
    );
    let note = b.expect_err("note: download of f.bin complete");
    assert!(note.contains("earlier:"), "{note}");
    assert_eq!(std::fs::read(down.join("f.bin")).unwrap(), data);
    assert!(b.errors().is_empty(), "{:?}", b.errors());
}

#[test]
fn pieces_of_a_download_are_never_announced_for_another_user() {
    let c = Cluster::start(2);
    let (mut a, mut ms) = group(&c, &["--upload-limit", "1M"], &["bob", "dave"]);
    let mut dave = ms.pop().unwrap();
    dave.run("logout", "logged out");
    let b = &mut ms[0];
    let mut eve = observer(&c, &mut a, "eve");
    let data = test_data(6 * PIECE, 4);
    share(&c, &mut a, "f.bin", &data);
    let down = dir(&c, "down");
    b.run(
        &format!("download_file g f.bin {}", down.display()),
        "downloading f.bin",
    );
    // Bob logs out while it runs and dave logs in on the same client.
    b.run("logout", "logged out");
    wait_download(b, "f.bin", running_with_pieces);
    b.run("login dave pw", "logged in as dave");
    b.expect_err("note: download of f.bin complete");
    b.sync();
    let srcs = sources(&mut eve, "f.bin");
    assert!(!srcs.contains(&"dave".to_string()), "{srcs:?}");
}

#[test]
fn a_part_file_this_client_did_not_create_is_left_untouched() {
    let c = Cluster::start(1);
    let (mut a, mut ms) = group(&c, &[], &["bob"]);
    let b = &mut ms[0];
    share(&c, &mut a, "movie.bin", &test_data(3 * PIECE, 4));
    let down = dir(&c, "down");
    // A browser's partial download under the same name.
    let foreign = down.join("movie.bin.part");
    std::fs::write(&foreign, b"someone else's partial download").unwrap();
    b.run_err(
        &format!("download_file g movie.bin {}", down.display()),
        "this client did not create it",
    );
    assert_eq!(
        std::fs::read(&foreign).unwrap(),
        b"someone else's partial download"
    );
    // A .part that is a symbolic link is never followed.
    let precious = c.path().join("precious");
    std::fs::write(&precious, b"keep me").unwrap();
    let elsewhere = dir(&c, "elsewhere");
    std::os::unix::fs::symlink(&precious, elsewhere.join("movie.bin.part")).unwrap();
    b.run_err(
        &format!("download_file g movie.bin {}", elsewhere.display()),
        "symbolic link",
    );
    assert_eq!(std::fs::read(&precious).unwrap(), b"keep me");
    // Moved away, the same download goes ahead and completes.
    std::fs::remove_file(&foreign).unwrap();
    b.run(
        &format!("download_file g movie.bin {}", down.display()),
        "downloading movie.bin",
    );
    b.expect_err("note: download of movie.bin complete");
    assert_eq!(
        std::fs::read(down.join("movie.bin")).unwrap(),
        test_data(3 * PIECE, 4)
    );
    assert!(!foreign.exists());
}

#[test]
fn list_files_counts_copies_online_and_stop_share_warns_of_the_last_one() {
    let c = Cluster::start(1);
    let (mut a, mut ms) = group(&c, &[], &["bob"]);
    let b = &mut ms[0];
    share(&c, &mut a, "f.bin", &test_data(3 * PIECE, 9));
    a.run("list_files g", "f.bin  1.5 MiB  1 seeder, 1.0 copy online");
    let down = dir(&c, "down");
    b.run(
        &format!("download_file g f.bin {}", down.display()),
        "downloading f.bin",
    );
    b.expect_err("note: download of f.bin complete");
    // The finished download's last pieces reach the tracker in its next `have` batch.
    let deadline = Instant::now() + WAIT;
    loop {
        b.send("list_files g");
        if b.sync()
            .iter()
            .any(|l| l.contains("2 seeders, 2.0 copies online"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "bob never became a second copy");
        std::thread::sleep(Duration::from_millis(100));
    }
    b.run("logout", "logged out");
    a.run("list_files g", "f.bin  1.5 MiB  2 seeders, 1.0 copy online");
    // Bob's copy is offline: alice's was the last one anybody could download from.
    a.run("stop_share g f.bin", "stopped sharing f.bin in group g");
    a.expect_err("warning: yours was the last complete copy of f.bin online");
    assert!(
        !a.errors().iter().any(|l| l.starts_with("error:")),
        "the command succeeded"
    );
}
