//! Hostile and idle connections never stop the tracker from serving others. Hostile bytes
//! are sent inside the secure channel (where the tracker's parsers see them), and garbage in
//! place of a handshake is refused at the channel.

mod common;
use common::*;
use groupshare::testkit::conn::{secure_connect, SecureConn};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A connection with its handshake done, for writing raw bytes inside the channel.
fn channel(addr: SocketAddr) -> SecureConn {
    secure_connect(addr, Duration::from_secs(5)).expect("secure connect")
}

fn send(s: &mut SecureConn, bytes: &[u8]) -> std::io::Result<()> {
    s.write_all(bytes)?;
    s.flush()
}

/// The first bytes of the reply (at most 256), waiting up to 10 s.
fn reply_of(s: &mut SecureConn) -> String {
    s.socket()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).expect("reply");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

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
    let mut halves: Vec<SecureConn> = (0..20)
        .map(|_| {
            let mut s = channel(addr);
            send(&mut s, b"1 create_gro").expect("write");
            s
        })
        .collect();
    good.ok("create_group during_halves");

    // An endless line: one error, then the connection is closed; the buffer stays bounded.
    let mut long = channel(addr);
    long.socket()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let chunk = vec![b'a'; 16 * 1024];
    let mut sent = 0;
    while sent < 1024 * 1024 {
        if send(&mut long, &chunk).is_err() {
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
        send(h, b"up x\n").expect("finish line");
    }
    for h in halves.iter_mut() {
        let text = reply_of(h);
        assert!(text.starts_with("1 err not_logged_in"), "{text}");
    }
    assert_eq!(good.req("list_groups").len(), 3);
}

#[test]
fn five_hundred_idle_connections_while_a_client_is_served() {
    let cl = Cluster::start(1);
    let idle: Vec<SecureConn> = (0..500).map(|_| channel(cl.addrs[0])).collect();
    let mut a = cl.conn(1);
    a.user("busy");
    for i in 0..50 {
        a.ok(&format!("create_group idle{i}"));
    }
    assert_eq!(a.req("list_groups").len(), 51);
    // The idle ones are still open and answer when they finally speak.
    let mut last = idle.into_iter().last().expect("one");
    send(&mut last, b"9 ping\n").expect("write");
    assert_eq!(reply_of(&mut last), "9 ok pong\n");
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

/// The soak of `make test`: 1,000 idle connections, 50 half-written lines and a few endless
/// lines against one tracker while clients keep being served.
#[test]
fn soak_idle_half_and_endless_lines_while_clients_are_served() {
    let cl = Cluster::start(1);
    let addr = cl.addrs[0];
    let idle: Vec<SecureConn> = (0..1000).map(|_| channel(addr)).collect();
    // Idle before even a handshake: they hold a connection and nothing else.
    let mute: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(addr).expect("idle connect"))
        .collect();
    let halves: Vec<SecureConn> = (0..50)
        .map(|i| {
            let mut s = channel(addr);
            send(&mut s, format!("{i} create_user half{i} p").as_bytes()).expect("write");
            s
        })
        .collect();
    let endless: Vec<std::thread::JoinHandle<bool>> = (0..3)
        .map(|_| {
            std::thread::spawn(move || {
                let Ok(mut s) = secure_connect(addr, Duration::from_secs(5)) else {
                    return false;
                };
                let chunk = vec![b'z'; 8192];
                for _ in 0..1000 {
                    if send(&mut s, &chunk).is_err() {
                        return true; // cut off by the tracker
                    }
                }
                false
            })
        })
        .collect();
    for round in 0..5 {
        let mut c = cl.conn(1);
        c.user(&format!("soak{round}"));
        c.ok(&format!("create_group soak{round}"));
        assert_eq!(c.req("list_groups").len(), round + 2);
        c.ok("logout");
    }
    for e in endless {
        assert!(e.join().expect("thread"), "an endless line was cut off");
    }
    // Every idle connection is still open and served.
    for (i, mut s) in idle.into_iter().enumerate().step_by(97) {
        send(&mut s, format!("{i} ping\n").as_bytes()).expect("write");
        assert_eq!(reply_of(&mut s), format!("{i} ok pong\n"));
    }
    drop(halves);
    drop(mute);
}

/// With the descriptor table full, `accept` fails with EMFILE. The tracker must neither spin
/// nor stop serving: surplus connections get a refusal, existing ones still work.
#[test]
fn out_of_descriptors_neither_spins_nor_stops_serving() {
    let mut cl = Cluster::new(1);
    // A hard limit of 40 descriptors, and a connection limit above it, so accept hits EMFILE.
    let child = std::process::Command::new("prlimit")
        .arg("--nofile=40:40")
        .arg(TRACKER)
        .arg(cl.dir.path().join("info"))
        .arg("1")
        .arg("--data-dir")
        .arg(cl.data_dir(1))
        .arg("--max-connections")
        .arg("1000")
        .arg("--kdf-iterations")
        .arg("4096")
        .arg("-q")
        .stdin(std::process::Stdio::null())
        .spawn();
    let Ok(child) = child else {
        panic!("prlimit (util-linux) is needed for this test");
    };
    let pid = child.id();
    cl.procs[0] = Some(child);
    cl.wait_serving(1);
    let mut keep = cl.conn(1);
    keep.user("survivor");
    let conns: Vec<TcpStream> = (0..80)
        .filter_map(|_| TcpStream::connect(addr_of(&cl)).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let cpu_before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(1));
    let cpu_after = cpu_ticks(pid);
    // A spinning loop burns ~100 ticks a second; an idle one almost none.
    assert!(
        cpu_after - cpu_before < 50,
        "tracker used {} ticks in 1 s while out of descriptors",
        cpu_after - cpu_before
    );
    // Some surplus connections were refused with a reason.
    let refused = conns
        .iter()
        .filter(|s| {
            let mut s = *s;
            let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
            let mut buf = [0u8; 128];
            matches!(s.read(&mut buf), Ok(n) if n > 0 && buf[..n].starts_with(b"0 err too_many_connections"))
        })
        .count();
    assert!(refused > 0, "no connection was refused politely");
    keep.ok("create_group still_serving");
    drop(conns);
    std::thread::sleep(Duration::from_millis(200));
    let mut again = cl.conn(1);
    again.ok("ping");
}

fn addr_of(cl: &Cluster) -> std::net::SocketAddr {
    cl.addrs[0]
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

/// Bytes that are not a handshake — a plain request, random bytes, a forged record header —
/// are refused at the channel: the connection is closed with nothing answered (no reply is
/// possible without a channel), nothing changes, and the tracker serves others throughout.
#[test]
fn garbage_before_or_instead_of_a_handshake_is_refused_without_harm() {
    let cl = Cluster::start(1);
    let addr = cl.addrs[0];
    let mut good = cl.conn(1);
    good.user("steady");
    let before = good.req("digest");
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    let attempts: Vec<Vec<u8>> = vec![
        b"1 create_user mallory pw\n".to_vec(),
        noise,
        // A record header claiming 64 KiB, then zeros: refused from its first two bytes.
        [&[0xff, 0xff][..], &[0u8; 1000][..]].concat(),
        // A first message of the right length but garbage inside, then more.
        [&[0x00, 0x20][..], &[7u8; 32][..], b"1 ping\n"].concat(),
    ];
    for bytes in attempts {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let _ = s.write_all(&bytes);
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        let text = String::from_utf8_lossy(&got);
        assert!(
            !text.contains("ok") && !text.contains("err"),
            "no request is answered outside a channel: {text:?}"
        );
        good.ok("ping");
    }
    assert_eq!(good.req("digest"), before, "nothing changed");
    assert_eq!(good.req("list_groups").len(), 1);
}
