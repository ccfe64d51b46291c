//! Liveness: what a client that stops answering without closing still holds, and for how
//! long. A tracker ends a silent logged-in client's session (its link pings when idle, so an
//! honest one is never taken for vanished); a seeder's upload slots cannot be held by silent
//! connections (a per-address share, and an idle close).
//!
//! Both tests wait out a real bound (25 s and 30 s); they sit in one file so that they run
//! side by side.

mod common;

use common::*;
use groupshare::client::peers::slots::{MAX_UPLOADS_PER_ADDR, UPLOAD_IDLE};
use groupshare::testkit::connect_from;
use std::io::{ErrorKind, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

#[test]
fn a_vanished_client_stops_being_listed_and_an_idle_one_stays() {
    let cl = Cluster::start(1);
    let dir = cl.path().join("share");
    std::fs::create_dir_all(&dir).expect("share dir");
    let file = dir.join("kept.bin");
    std::fs::write(&file, test_data(100_000, 3)).expect("write share");
    let frozen_file = dir.join("frozen.bin");
    std::fs::write(&frozen_file, test_data(100_000, 4)).expect("write share");

    // Carol, a real client, shares a file and then sits idle: her link pings.
    let mut carol = cl.client("carol");
    carol.run("create_user carol pw", "created user carol");
    carol.run("login carol pw", "logged in as carol");
    carol.run("create_group g", "created group g");

    // Alice, a raw connection, shares a file too, then stops answering without closing.
    let mut alice = cl.conn(1);
    alice.user("alice");
    alice.ok(&v::join_group("g"));
    carol.run("accept_request g alice", "alice is now a member of group g");
    let r = alice.upload("g", "gone.bin", 1 << 20, 1);
    assert!(r[0].starts_with("ok"), "{r:?}");
    carol.run(
        &format!("upload_file {} g", file.display()),
        "uploaded kept.bin to g",
    );
    let silent_since = Instant::now();
    // Dave, a real client, shares a file and is then frozen (SIGSTOP: a laptop lid closed).
    let mut dave = cl.client("dave");
    dave.run("create_user dave pw-dave", "created user dave");
    dave.run("login dave pw-dave", "logged in as dave");
    dave.run("join_group g", "asked to join");
    carol.run("accept_request g dave", "dave is now a member of group g");
    dave.run(
        &format!("upload_file {} g", frozen_file.display()),
        "uploaded frozen.bin to g",
    );
    // SAFETY: kill(2) on our own child, which the harness has not reaped.
    unsafe {
        libc::kill(dave.pid() as libc::pid_t, libc::SIGSTOP);
    }

    let mut bob = cl.conn(1);
    bob.user("bob");
    bob.ok(&v::join_group("g"));
    carol.run("accept_request g bob", "bob is now a member of group g");
    let listed = |bob: &mut Conn, file: &str, user: &str| {
        bob.req(&v::peers("g", file))
            .iter()
            .skip(1)
            .any(|l| l.starts_with(&format!("p {user} ")))
    };
    assert!(listed(&mut bob, "gone.bin", "alice"));
    assert!(listed(&mut bob, "kept.bin", "carol"));
    assert!(listed(&mut bob, "frozen.bin", "dave"));

    // Bob keeps asking (so he is not silent himself); alice and dave must disappear within
    // the bound.
    let deadline = silent_since + Duration::from_secs(45);
    while listed(&mut bob, "gone.bin", "alice") || listed(&mut bob, "frozen.bin", "dave") {
        assert!(
            Instant::now() < deadline,
            "alice or dave is still listed {:?} after they went silent",
            silent_since.elapsed()
        );
        thread::sleep(Duration::from_millis(500));
    }
    let gone_after = silent_since.elapsed();
    eprintln!("the silent client stopped being listed after {gone_after:?}");
    // Carol sent no command since, only her link's pings: she is still a source.
    assert!(
        listed(&mut bob, "kept.bin", "carol"),
        "an idle client that pings must stay listed"
    );
    // Their sessions are over: each user may log in again from elsewhere.
    let mut again = cl.conn(1);
    again.login("alice");
    let mut again = cl.conn(1);
    again.login("dave");
    drop(alice);
    drop(dave); // killed, stopped or not
}

#[test]
fn a_seeder_with_64_idle_connections_still_serves_a_real_downloader_and_closes_them() {
    let c = Cluster::start(1);
    let port = free_ports(1)[0];
    let seeder_addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let mut alice = c.client_with("alice", &[&seeder_addr.to_string()], &[]);
    alice.run("create_user alice pw", "created user");
    alice.run("login alice pw", "logged in as");
    alice.run("create_group g", "created group g");
    let dir = c.path().join("files-alice");
    std::fs::create_dir_all(&dir).expect("dir");
    let data = test_data(3 * 512 * 1024 + 100, 11);
    let path = dir.join("data.bin");
    std::fs::write(&path, &data).expect("write");
    alice.run(
        &format!("upload_file {} g", path.display()),
        "uploaded data.bin to g",
    );

    // 64 connections from another address that never send a byte.
    let silent: Vec<TcpStream> = (0..64)
        .map(|_| connect_from(Ipv4Addr::new(127, 0, 0, 2), seeder_addr).expect("connect"))
        .collect();
    for s in &silent {
        s.set_nonblocking(true).expect("nonblocking");
    }
    // Beyond its share, that address is told `err busy` and closed.
    let refused_wanted = 64 - MAX_UPLOADS_PER_ADDR;
    let mut refused = vec![false; silent.len()];
    let deadline = Instant::now() + WAIT;
    while refused.iter().filter(|r| **r).count() < refused_wanted {
        assert!(
            Instant::now() < deadline,
            "only {} of 64 connections from one address were refused",
            refused.iter().filter(|r| **r).count()
        );
        for (i, mut s) in silent.iter().enumerate() {
            let mut buf = [0u8; 64];
            match s.read(&mut buf) {
                Ok(n) if n > 0 => {
                    assert_eq!(&buf[..n], b"err busy\n");
                    refused[i] = true;
                }
                Ok(_) => refused[i] = true,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => refused[i] = true,
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(refused.iter().filter(|r| **r).count(), refused_wanted);

    // A real downloader from 127.0.0.1 is served, and the file is whole.
    let mut bob = c.client_with("bob", &["127.0.0.1:0"], &[]);
    bob.run("create_user bob pw", "created user");
    bob.run("login bob pw", "logged in as");
    bob.run("join_group g", "asked to join");
    alice.run("accept_request g bob", "now a member");
    let down = c.path().join("down-bob");
    std::fs::create_dir_all(&down).expect("dir");
    bob.run(
        &format!("download_file g data.bin {}", down.display()),
        "downloading data.bin from g",
    );
    bob.expect(
        false,
        "download of data.bin complete",
        Duration::from_secs(60),
    );
    assert_eq!(
        std::fs::read(down.join("data.bin")).expect("downloaded file"),
        data
    );

    // The connections it admitted from that address, silent all along, are closed once idle
    // past the bound.
    let deadline = Instant::now() + UPLOAD_IDLE + WAIT;
    for (i, mut s) in silent.iter().enumerate().filter(|(i, _)| !refused[*i]) {
        s.set_nonblocking(false).expect("blocking");
        let left = deadline.saturating_duration_since(Instant::now());
        s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("timeout");
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            other => panic!("silent connection {i}: expected a close, got {other:?}"),
        }
    }
}
