//! The group-gated data plane with the real binaries: a tracker issuing 2-second tickets
//! (`--ticket-lifetime 2s`), a real client sharing a file in group `g`, and a downloader spoken
//! by hand — the secure channel to the seeder, then `want`/`get` as docs/PROTOCOL.md writes
//! them. An outsider
//! gets nothing and cannot tell a shared file from a missing one; a member gets the bytes with
//! the ticket from its peer line; an expired ticket is refused; a member who left is refused
//! once its last ticket runs out, well inside the documented minute.

mod common;

use common::{free_ports, rand_u64, test_data, v, Cluster, Conn, Reply, WAIT};
use groupshare::auth::ticket::{self, ACCESS_BOUND};
use groupshare::net::identity::Identity;
use groupshare::net::secure::Conversation;
use groupshare::net::secure_stream::{connect_blocking, SecureStream};
use groupshare::protocol::tracker::PeerLine;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const LIFETIME: u64 = 2;
const PIECE: usize = 512 * 1024;

/// A hand-made peer connection: the downloader's side of the secure channel (as `who`, whose
/// key a ticket may name), then plain protocol lines inside it.
struct Peer {
    r: BufReader<SecureStream<TcpStream>>,
    /// Every byte received, to look for file bytes in.
    seen: Vec<u8>,
}

impl Peer {
    fn connect(addr: SocketAddr, who: &Identity) -> Peer {
        let s = TcpStream::connect(addr).expect("connect to the seeder");
        s.set_read_timeout(Some(WAIT)).expect("a read timeout");
        let s = connect_blocking(s, who, None, Conversation::ClientClient)
            .expect("the seeder's handshake");
        Peer {
            r: BufReader::new(s),
            seen: Vec::new(),
        }
    }

    /// Sends one request line and returns the reply's header line.
    fn ask(&mut self, line: &str) -> String {
        let w = self.r.get_mut();
        w.write_all(format!("{line}\n").as_bytes())
            .and_then(|()| w.flush())
            .expect("send a request");
        let mut reply = String::new();
        self.r.read_line(&mut reply).expect("a reply line");
        self.seen.extend_from_slice(reply.as_bytes());
        reply.trim_end().to_string()
    }

    /// The `len` bytes after a `piece` header.
    fn payload(&mut self, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len];
        self.r.read_exact(&mut buf).expect("the piece's bytes");
        self.seen.extend_from_slice(&buf);
        buf
    }
}

/// The requester's peer line for `user` from `peers g f`.
fn peer_line(c: &mut Conn, user: &str) -> PeerLine {
    let lines = c.req(&v::peers("g", "f"));
    lines
        .iter()
        .skip(1)
        .find_map(|l| PeerLine::parse(l, 3).filter(|p| p.user == user))
        .unwrap_or_else(|| panic!("no peer line for {user}: {lines:?}"))
}

fn want(who: &str, p: &PeerLine) -> String {
    let t = p
        .ticket
        .expect("the tracker issues a ticket with every peer line");
    format!("want g f {who} {}", t.encode())
}

/// Sleeps until the tracker's clock (the same machine's) is past `expiry`.
fn sleep_past(expiry: u64) {
    while ticket::unix_now() <= expiry {
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn only_members_with_a_live_ticket_get_bytes_and_leaving_ends_access() {
    let mut c = Cluster::new(1);
    c.spawn_with(1, &["--ticket-lifetime", &format!("{LIFETIME}s")]);
    c.wait_serving(1);
    let port = free_ports(1)[0];
    let seeder_addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("an address");
    let mut alice = c.client_with("alice", &[&seeder_addr.to_string()], &[]);
    alice.run("create_user alice pw", "created user");
    alice.run("login alice pw", "logged in as");
    alice.run("create_group g", "created group g");
    let data = test_data(2 * PIECE + 1000, 9);
    let dir = c.path().join("files-alice");
    std::fs::create_dir_all(&dir).expect("a directory");
    std::fs::write(dir.join("f"), &data).expect("the file");
    alice.run(
        &format!("upload_file {} g", dir.join("f").display()),
        "uploaded f to g",
    );

    // An outsider: no account, no ticket, or one made up.
    let stranger = Identity::generate().expect("a key");
    let mut out = Peer::connect(seeder_addr, &stranger);
    let made_up = format!("{} {}", ticket::unix_now() + 1, "ab".repeat(32));
    let probes = [
        "want g f".to_string(),
        "watch g f".to_string(),
        "get g f 0".to_string(),
        format!("want g f mallory {made_up}"),
        format!("watch g f mallory {made_up}"),
        format!("want g nothing_here mallory {made_up}"),
        "want g nothing_here".to_string(),
        "get g nothing_here 0".to_string(),
        "get g f 0".to_string(),
    ];
    for p in &probes {
        assert_eq!(out.ask(p), "err forbidden", "{p}");
    }

    // bob, a member, with a raw tracker connection.
    // bob's tickets name the key his tracker connection proved: his peer channels use it too.
    let bob_id = Identity::generate().expect("a key");
    let mut bob = Conn::connect_as(c.addrs[0], &bob_id).expect("connect");
    bob.ok(&v::hello(rand_u64()));
    bob.ok(&v::create_user("bob", "pw-bob"));
    bob.ok(&v::login("bob", "pw-bob", "127.0.0.1:1"));
    bob.ok(&v::join_group("g"));
    alice.run("accept_request g bob", "now a member");
    let line = peer_line(&mut bob, "alice");
    let t = line.ticket.expect("a ticket");
    let left = t.expiry.saturating_sub(ticket::unix_now());
    assert!(left <= LIFETIME + 1, "a {LIFETIME} s ticket lasts {left} s");

    // The ticket is bob's: shown by anyone else it opens nothing.
    // Shown by another client (another key), or in another's name, it opens nothing.
    let mut thief = Peer::connect(seeder_addr, &stranger);
    assert_eq!(thief.ask(&want("mallory", &line)), "err forbidden");
    assert_eq!(thief.ask("get g f 0"), "err forbidden");
    assert!(
        !out.seen
            .windows(64)
            .any(|w| data.windows(64).any(|d| d == w)),
        "no file byte reached the outsider"
    );

    // bob gets the bytes on one connection.
    let mut p = Peer::connect(seeder_addr, &bob_id);
    assert_eq!(p.ask(&want("bob", &line)), "have 3 all");
    assert_eq!(p.ask("get g f 2"), "piece 2 1000");
    assert_eq!(p.payload(1000), data[2 * PIECE..]);

    // Expired: a get is told so, the old ticket opens nothing, a fresh one renews the same
    // connection.
    sleep_past(t.expiry);
    assert_eq!(p.ask("get g f 0"), "err ticket_expired");
    assert_eq!(p.ask(&want("bob", &line)), "err forbidden");
    let fresh = peer_line(&mut bob, "alice");
    assert_eq!(p.ask(&want("bob", &fresh)), "have 3 all");
    assert_eq!(p.ask("get g f 0"), format!("piece 0 {PIECE}"));
    assert_eq!(p.payload(PIECE), data[..PIECE]);

    // bob leaves: the tracker issues nothing more, and the seeder refuses him once his last
    // ticket runs out.
    let last = peer_line(&mut bob, "alice");
    assert_eq!(p.ask(&want("bob", &last)), "have 3 all");
    bob.ok(&v::leave_group("g"));
    let left_at = Instant::now();
    match bob.typed(&v::peers("g", "f")) {
        Reply::Err { code, .. } => assert_eq!(code.as_str(), "not_member"),
        other => panic!("a leaver still gets peers: {other:?}"),
    }
    let refused_after = loop {
        let r = p.ask("get g f 1");
        if r == "err ticket_expired" {
            break left_at.elapsed();
        }
        assert_eq!(r, format!("piece 1 {PIECE}"));
        p.payload(PIECE);
        assert!(left_at.elapsed() < WAIT, "still served long after leaving");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        refused_after <= Duration::from_secs(LIFETIME + 3),
        "refused {refused_after:?} after leaving with {LIFETIME} s tickets"
    );
    assert!(refused_after < Duration::from_secs(ACCESS_BOUND));
    assert_eq!(p.ask(&want("bob", &last)), "err forbidden");
}

/// A download that outlives many tickets: the downloader renews its ticket on the same
/// connection as the tracker hands out fresh ones, and never stalls for it.
#[test]
fn a_download_longer_than_a_ticket_renews_it_and_completes() {
    let mut c = Cluster::new(1);
    c.spawn_with(1, &["--ticket-lifetime", &format!("{LIFETIME}s")]);
    c.wait_serving(1);
    // 6 MiB at 1 MiB/s: about three ticket lifetimes.
    let mut alice = c.client_with("alice", &["127.0.0.1:0"], &["--upload-limit", "1M"]);
    alice.run("create_user alice pw", "created user");
    alice.run("login alice pw", "logged in as");
    alice.run("create_group g", "created group g");
    let data = test_data(12 * PIECE, 4);
    let dir = c.path().join("files-alice");
    std::fs::create_dir_all(&dir).expect("a directory");
    std::fs::write(dir.join("long.bin"), &data).expect("the file");
    alice.run(
        &format!("upload_file {} g", dir.join("long.bin").display()),
        "uploaded long.bin to g",
    );
    let mut bob = c.client("bob");
    bob.run("create_user bob pw", "created user");
    bob.run("login bob pw", "logged in as");
    bob.run("join_group g", "asked to join");
    alice.run("accept_request g bob", "now a member");
    let down = c.path().join("down-bob");
    std::fs::create_dir_all(&down).expect("a directory");
    let started = Instant::now();
    bob.run(
        &format!("download_file g long.bin {}", down.display()),
        "downloading long.bin from g",
    );
    let note = bob.expect(
        false,
        "download of long.bin complete",
        Duration::from_secs(40),
    );
    assert!(note.contains("from alice: 12 pieces"), "{note}");
    assert!(
        started.elapsed() > Duration::from_secs(2 * LIFETIME),
        "the download should outlive its first ticket to show anything"
    );
    assert_eq!(
        std::fs::read(down.join("long.bin")).expect("the copy"),
        data
    );
}
