//! Hostile and idle connections never stop the tracker from serving others.

mod tracker_support;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use tracker_support::*;

#[test]
fn garbage_overlong_and_half_lines_while_others_are_served() {
    let cl = Cluster::start(1);
    let addr = cl.addrs[0];
    let mut good = cl.conn(1);
    good.user("steady");

    // Invalid UTF-8 and random bytes: an error reply each, the connection stays usable.
    let mut g = Conn::connect(addr).expect("connect");
    g.send_raw(b"\xff\xfe\xfd garbage\n7 ping\n");
    assert!(g
        .read_line()
        .expect("reply")
        .starts_with("0 err bad_request"));
    assert_eq!(g.read_line().expect("reply"), "7 ok pong");
    let noise: Vec<u8> = (0..20_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    g.send_raw(&noise);

    // Half-written lines park without blocking anyone.
    let mut halves: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = TcpStream::connect(addr).expect("connect");
            s.write_all(b"1 create_gro").expect("write");
            s
        })
        .collect();
    good.ok("create_group during_halves");

    // An endless line: one error, then the connection is closed; the buffer stays bounded.
    let mut long = TcpStream::connect(addr).expect("connect");
    long.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let chunk = vec![b'a'; 16 * 1024];
    let mut sent = 0;
    while sent < 1024 * 1024 {
        if long.write_all(&chunk).is_err() {
            break; // closed by the tracker, as it should
        }
        sent += chunk.len();
    }
    let mut reply = Vec::new();
    let _ = long.read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("0 err line_too_long"), "{reply}");

    good.ok("create_group after_long");
    // The half lines, completed, are still answered.
    for h in halves.iter_mut() {
        h.write_all(b"up x\n").expect("finish line");
    }
    for h in halves.iter_mut() {
        h.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut buf = [0u8; 256];
        let n = h.read(&mut buf).expect("reply to completed half line");
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.starts_with("1 err not_logged_in"), "{text}");
    }
    assert_eq!(good.req("list_groups").len(), 3);
}

#[test]
fn five_hundred_idle_connections_while_a_client_is_served() {
    let cl = Cluster::start(1);
    let idle: Vec<TcpStream> = (0..500)
        .map(|_| TcpStream::connect(cl.addrs[0]).expect("idle connect"))
        .collect();
    let mut a = cl.conn(1);
    a.user("busy");
    for i in 0..50 {
        a.ok(&format!("create_group idle{i}"));
    }
    assert_eq!(a.req("list_groups").len(), 51);
    // The idle ones are still open and answer when they finally speak.
    let mut last = idle.into_iter().last().expect("one");
    last.write_all(b"9 ping\n").expect("write");
    last.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    let n = last.read(&mut buf).expect("read");
    assert_eq!(&buf[..n], b"9 ok pong\n");
}

#[test]
fn connections_beyond_the_limit_are_refused_with_a_reason() {
    let mut cl = Cluster::new(1);
    cl.spawn_with(1, &["--max-connections", "10"]);
    cl.wait_serving(1);
    // wait_serving's own connection may still be closing; hold the rest of the budget.
    std::thread::sleep(Duration::from_millis(100));
    let held: Vec<TcpStream> = (0..10)
        .map(|_| TcpStream::connect(cl.addrs[0]).expect("connect"))
        .collect();
    let mut extra = TcpStream::connect(cl.addrs[0]).expect("connect");
    extra
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut text = String::new();
    let _ = extra.read_to_string(&mut text);
    assert!(text.starts_with("0 err too_many_connections"), "{text:?}");
    drop(held);
    // Capacity comes back once connections close.
    std::thread::sleep(Duration::from_millis(200));
    let mut again = cl.conn(1);
    again.ok("ping");
}
