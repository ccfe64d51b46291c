//! The peer side in process: several `PeerSide`s, each with its own `mio::Poll`, driven in
//! turn by one thread in bounded loops. They talk over real loopback sockets.

mod peer_support;

use groupshare::client::peers::store::part_path;
use groupshare::client::peers::{DownloadState, PeerEvent, PeerInfo};
use groupshare::net::secure_stream::SecureStream;
use groupshare::pieces::{PieceSet, PIECE_SIZE};
use peer_support::*;
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

#[test]
fn downloads_a_shared_file_with_an_odd_last_piece() {
    let dir = tempfile::tempdir().unwrap();
    let data = content(3 * PIECE_SIZE as usize + 12_345, 1);
    let mut s = Node::new("seeder");
    let mut d = Node::new("downloader");
    share(&mut s, dir.path(), "f.bin", &data);
    let dest = dir.path().join("out.bin");
    start(
        &mut d,
        "f.bin",
        &data,
        &dest,
        vec![s.info(PieceSet::full(4))],
    );
    assert!(drive(&mut [&mut d, &mut s], |n| n[0].completed(1)));
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    assert!(!part_path(&dest).exists());
    let st = d.status(1);
    assert_eq!(
        (st.state, st.pieces_done, st.pieces_total),
        (DownloadState::Complete, 4, 4)
    );
    assert_eq!(d.verified(1), vec![0, 1, 2, 3]);
    assert!(!d.side.has_active_downloads());
    assert_eq!(d.side.peer_piece_counts(1), vec![("seeder".to_string(), 4)]);
    // Now a seeder of it, from its final path.
    let mut c = Client::connect(d.addr);
    c.send(&t("want g f.bin"));
    assert_eq!(c.line(&mut [&mut d]), "have 4 all");
    c.send("get g f.bin 3");
    assert_eq!(c.line(&mut [&mut d]), "piece 3 12345");
    assert_eq!(
        c.bytes(12_345, &mut [&mut d]),
        data[3 * PIECE_SIZE as usize..]
    );
}

#[test]
fn downloads_from_two_seeders_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = content(24 * PIECE_SIZE as usize + 1, 2);
    let n = npieces(&data);
    let mut s1 = Node::new("s1");
    let mut s2 = Node::new("s2");
    let mut d = Node::new("d");
    share(&mut s1, dir.path(), "f", &data);
    share(&mut s2, dir.path(), "f", &data);
    let dest = dir.path().join("out");
    let sources = vec![s1.info(PieceSet::full(n)), s2.info(PieceSet::full(n))];
    start(&mut d, "f", &data, &dest, sources);
    assert!(drive(&mut [&mut d, &mut s1, &mut s2], |n| n[0].completed(1)));
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    let counts = d.side.peer_piece_counts(1);
    assert_eq!(counts.len(), 2);
    assert!(counts.iter().all(|(_, c)| *c > 0), "{counts:?}");
    assert_eq!(counts.iter().map(|(_, c)| c).sum::<u64>(), n as u64);
}

#[test]
fn a_corrupt_seeder_is_outvoted_by_an_honest_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = content(8 * PIECE_SIZE as usize + 77, 3);
    let n = npieces(&data);
    let mut bad = Node::new("bad");
    let mut good = Node::new("good");
    let mut d = Node::new("d");
    let bad_path = share(&mut bad, dir.path(), "f", &data);
    share(&mut good, dir.path(), "f", &data);
    let mut corrupt = data.clone();
    for i in 0..n {
        corrupt[i * PIECE_SIZE as usize + 5] ^= 0xff;
    }
    std::fs::write(&bad_path, &corrupt).unwrap();
    let dest = dir.path().join("out");
    let sources = vec![bad.info(PieceSet::full(n)), good.info(PieceSet::full(n))];
    start(&mut d, "f", &data, &dest, sources);
    assert!(drive(&mut [&mut d, &mut bad, &mut good], |n| n[0].completed(1)));
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    let counts: HashMap<String, u64> = d.side.peer_piece_counts(1).into_iter().collect();
    assert_eq!(counts.get("bad"), Some(&0));
    assert_eq!(counts.get("good"), Some(&(n as u64)));
}

#[test]
fn with_only_a_corrupt_seeder_the_destination_is_never_created() {
    let dir = tempfile::tempdir().unwrap();
    let data = content(6 * PIECE_SIZE as usize, 4);
    let n = npieces(&data);
    let mut bad = Node::new("bad");
    let mut d = Node::new("d");
    let bad_path = share(&mut bad, dir.path(), "f", &data);
    let mut corrupt = data.clone();
    corrupt[2 * PIECE_SIZE as usize + 9] ^= 1; // one bad piece: the rest is good
    std::fs::write(&bad_path, &corrupt).unwrap();
    let dest = dir.path().join("out");
    start(&mut d, "f", &data, &dest, vec![bad.info(PieceSet::full(n))]);
    assert!(drive(&mut [&mut d, &mut bad], |n| n[0]
        .status(1)
        .pieces_done
        == 5));
    spin(&mut [&mut d, &mut bad], 200);
    assert!(!dest.exists());
    assert!(part_path(&dest).exists());
    let st = d.status(1);
    assert_eq!((st.state, st.pieces_done), (DownloadState::Downloading, 5));
    assert_eq!(d.verified(1), vec![0, 1, 3, 4, 5]);
    assert!(!d.completed(1));
    assert!(d.side.has_active_downloads());
}

#[test]
fn a_seeder_that_sends_three_bad_pieces_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let data = content(6 * PIECE_SIZE as usize, 5);
    let n = npieces(&data);
    let mut bad = Node::new("bad");
    let mut d = Node::new("d");
    let bad_path = share(&mut bad, dir.path(), "f", &data);
    let corrupt: Vec<u8> = data.iter().map(|b| b ^ 0x55).collect();
    std::fs::write(&bad_path, &corrupt).unwrap();
    let dest = dir.path().join("out");
    start(&mut d, "f", &data, &dest, vec![bad.info(PieceSet::full(n))]);
    // Dropped for good: no connection, even after NeedPeers offered it again.
    assert!(drive(&mut [&mut d, &mut bad], |n| n[0]
        .log
        .iter()
        .filter(|e| matches!(e, PeerEvent::NeedPeers { .. }))
        .count()
        >= 2));
    spin(&mut [&mut d, &mut bad], 100);
    assert_eq!(d.status(1).peers, 0);
    assert_eq!(d.status(1).pieces_done, 0);
    assert!(!dest.exists());
}

#[test]
fn resumes_from_an_existing_part_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = content(10 * PIECE_SIZE as usize + 1, 6);
    let n = npieces(&data);
    let dest = dir.path().join("out");
    // A .part with pieces 0-4 and the 1-byte piece 10 right, and piece 2 damaged.
    let mut part = vec![0u8; data.len()];
    part[..5 * PIECE_SIZE as usize].copy_from_slice(&data[..5 * PIECE_SIZE as usize]);
    part[10 * PIECE_SIZE as usize] = data[10 * PIECE_SIZE as usize];
    part[2 * PIECE_SIZE as usize] ^= 1;
    leave_part(&dest, &part);
    let mut s = Node::new("s");
    let mut d = Node::new("d");
    share(&mut s, dir.path(), "f", &data);
    start(&mut d, "f", &data, &dest, vec![s.info(PieceSet::full(n))]);
    assert_eq!(d.status(1).state, DownloadState::Verifying);
    assert!(drive(&mut [&mut d, &mut s], |n| n[0].completed(1)));
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    let first = d
        .log
        .iter()
        .find_map(|e| match e {
            PeerEvent::PiecesVerified { pieces, .. } => Some(pieces.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        first,
        vec![0, 1, 3, 4, 10],
        "the resume check reports exactly the good pieces"
    );
    assert_eq!(d.verified(1), (0..n).collect::<Vec<_>>());
    assert_eq!(d.side.peer_piece_counts(1), vec![("s".to_string(), 6)]);
}

#[test]
fn a_partial_downloader_serves_its_verified_pieces_to_a_third_peer() {
    let dir = tempfile::tempdir().unwrap();
    let data = content(8 * PIECE_SIZE as usize - 3, 7);
    let n = npieces(&data);
    // The partial downloader: a .part holding pieces 1, 4 and 7, and no source at all.
    let d_dest = dir.path().join("d-out");
    let mut part = vec![0u8; data.len()];
    for i in [1usize, 4, 7] {
        let r = i * PIECE_SIZE as usize..((i + 1) * PIECE_SIZE as usize).min(data.len());
        part[r.clone()].copy_from_slice(&data[r]);
    }
    leave_part(&d_dest, &part);
    let mut d = Node::new("d");
    start(&mut d, "f", &data, &d_dest, vec![]);
    let mut t = Node::new("t");
    let t_dest = dir.path().join("t-out");
    let d_have = d.info(PieceSet::empty(n));
    start(&mut t, "f", &data, &t_dest, vec![d_have]);
    assert!(drive(&mut [&mut d, &mut t], |n| n[1].status(1).pieces_done == 3));
    assert_eq!(t.verified(1), vec![1, 4, 7]);
    assert_eq!(t.side.peer_piece_counts(1), vec![("d".to_string(), 3)]);
    assert_eq!(d.status(1).state, DownloadState::Downloading);
    // A seeder appears; both finish, and d never served what it did not hold.
    let mut s = Node::new("s");
    share(&mut s, dir.path(), "f", &data);
    let with_s = vec![d.info(PieceSet::empty(n)), s.info(PieceSet::full(n))];
    t.sources.insert(1, with_s);
    d.sources.insert(1, vec![s.info(PieceSet::full(n))]);
    assert!(drive(&mut [&mut d, &mut t, &mut s], |n| n[0].completed(1)
        && n[1].completed(1)));
    assert_eq!(std::fs::read(&t_dest).unwrap(), data);
    assert_eq!(std::fs::read(&d_dest).unwrap(), data);
}

#[test]
fn start_download_refuses_a_taken_destination_or_a_missing_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data = content(100, 8);
    let mut d = Node::new("d");
    let taken = dir.path().join("taken");
    std::fs::write(&taken, b"x").unwrap();
    let err = d
        .side
        .start_download(1, spec("f", &data, taken), Instant::now())
        .unwrap_err();
    assert!(err.contains("already exists"), "{err}");
    let nowhere = dir.path().join("no-such-dir").join("out");
    let err = d
        .side
        .start_download(2, spec("f", &data, nowhere), Instant::now())
        .unwrap_err();
    assert!(err.contains("does not exist"), "{err}");
    assert!(d.side.downloads().is_empty());
}

#[test]
fn an_empty_file_completes_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Node::new("d");
    let dest = dir.path().join("empty");
    start(&mut d, "e", &[], &dest, vec![]);
    assert!(drive(&mut [&mut d], |n| n[0].completed(1)));
    assert_eq!(std::fs::read(&dest).unwrap(), b"");
    assert!(!part_path(&dest).exists());
}

#[test]
fn hashing_a_file_to_share_reports_its_piece_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let data = content(20 * PIECE_SIZE as usize + 9, 9);
    let path = dir.path().join("up");
    std::fs::write(&path, &data).unwrap();
    let mut n = Node::new("n");
    n.side.start_hashing(7, path).unwrap();
    assert!(n.side.next_deadline().is_some());
    assert!(drive(&mut [&mut n], |n| !n[0].log.is_empty()));
    assert_eq!(
        n.log[0],
        PeerEvent::Hashed {
            job: 7,
            size: data.len() as u64,
            hashes: hashes_of(&data)
        }
    );
    assert!(n.side.start_hashing(8, dir.path().join("missing")).is_err());
}

/// A blocking-free client speaking the peer protocol to a node's listener, inside the
/// secure channel as a downloader does.
struct Client {
    s: SecureStream<TcpStream>,
    buf: Vec<u8>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let s = FakeKey::me().connect(addr);
        Client { s, buf: Vec::new() }
    }

    /// From another loopback address, as another host would connect.
    fn connect_from(from: std::net::Ipv4Addr, addr: SocketAddr) -> Client {
        let s = FakeKey::me().over(groupshare::testkit::connect_from(from, addr).unwrap());
        Client { s, buf: Vec::new() }
    }

    fn send(&mut self, line: &str) {
        self.s.socket().set_nonblocking(false).unwrap();
        self.s.write_all(format!("{line}\n").as_bytes()).unwrap();
        self.s.flush().unwrap();
        self.s.socket().set_nonblocking(true).unwrap();
    }

    /// Completes the handshake (turning `nodes`), so what was sent has left.
    fn settle(&mut self, nodes: &mut [&mut Node]) {
        let start = Instant::now();
        let mut none = [0u8; 1];
        while !self.s.is_established() && start.elapsed() < LIMIT {
            match self.s.read(&mut none) {
                Ok(k) => self.buf.extend_from_slice(&none[..k]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => spin(nodes, 1),
                Err(e) => panic!("{e}"),
            }
        }
        assert!(self.s.is_established(), "handshake with the seeder");
        let _ = self.s.flush();
    }

    /// Reads (turning `nodes` meanwhile) until `n` bytes are buffered or the peer closed.
    fn fill(&mut self, n: usize, nodes: &mut [&mut Node]) -> bool {
        let start = Instant::now();
        let mut chunk = [0u8; 65536];
        while self.buf.len() < n && start.elapsed() < LIMIT {
            match self.s.read(&mut chunk) {
                Ok(0) => return false,
                Ok(k) => self.buf.extend_from_slice(&chunk[..k]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => spin(nodes, 1),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return false,
                Err(e) => panic!("{e}"),
            }
        }
        self.buf.len() >= n
    }

    fn line(&mut self, nodes: &mut [&mut Node]) -> String {
        let start = Instant::now();
        loop {
            if let Some(p) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=p).collect();
                return String::from_utf8(line[..p].to_vec()).unwrap();
            }
            assert!(start.elapsed() < LIMIT, "no line");
            let want = self.buf.len() + 1;
            if !self.fill(want, nodes) {
                return String::new();
            }
        }
    }

    fn bytes(&mut self, n: usize, nodes: &mut [&mut Node]) -> Vec<u8> {
        assert!(self.fill(n, nodes));
        self.buf.drain(..n).collect()
    }
}

#[test]
fn refused_requests_get_err_replies() {
    let dir = tempfile::tempdir().unwrap();
    let data = content(PIECE_SIZE as usize + 1, 10);
    let mut s = Node::new("s");
    share(&mut s, dir.path(), "f", &data);
    let mut c = Client::connect(s.addr);
    c.send(&t("want g nosuchfile"));
    assert_eq!(c.line(&mut [&mut s]), "err forbidden");
    c.send("get other f 0");
    assert_eq!(c.line(&mut [&mut s]), "err forbidden");
    c.send("get g f 0");
    assert_eq!(
        c.line(&mut [&mut s]),
        "err forbidden",
        "no ticket shown yet"
    );
    c.send("want g f");
    assert_eq!(c.line(&mut [&mut s]), "err forbidden", "no ticket");
    c.send(&t("want g f"));
    assert_eq!(c.line(&mut [&mut s]), "have 2 all");
    c.send("get g f 2");
    assert_eq!(c.line(&mut [&mut s]), "err bad_index");
    c.send("get g ../../etc/passwd 0");
    assert_eq!(c.line(&mut [&mut s]), "err bad_request");
    c.send("hello there");
    assert_eq!(c.line(&mut [&mut s]), "err bad_request");
    c.send(&t("want g f"));
    assert_eq!(c.line(&mut [&mut s]), "have 2 all");
    c.send("get g f 1");
    assert_eq!(c.line(&mut [&mut s]), "piece 1 1");
    assert_eq!(c.bytes(1, &mut [&mut s]), data[PIECE_SIZE as usize..]);
    // A line over 64 KiB: one err, then the connection closes.
    c.send(&"x".repeat(70_000));
    assert_eq!(c.line(&mut [&mut s]), "err line_too_long");
    assert!(!c.fill(c.buf.len() + 1, &mut [&mut s]));
}

#[test]
fn a_peer_that_half_closes_still_gets_its_answers() {
    let dir = tempfile::tempdir().unwrap();
    let data = content(2 * PIECE_SIZE as usize, 17);
    let mut s = Node::new("s");
    share(&mut s, dir.path(), "f", &data);
    let mut c = Client::connect(s.addr);
    c.send(&format!(
        "{}\nget g f 0\nget g f 1\n{}",
        t("want g f"),
        t("want g f")
    ));
    c.settle(&mut [&mut s]);
    c.s.socket().shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(c.line(&mut [&mut s]), "have 2 all");
    assert_eq!(c.line(&mut [&mut s]), format!("piece 0 {PIECE_SIZE}"));
    c.bytes(PIECE_SIZE as usize, &mut [&mut s]);
    assert_eq!(c.line(&mut [&mut s]), format!("piece 1 {PIECE_SIZE}"));
    c.bytes(PIECE_SIZE as usize, &mut [&mut s]);
    assert_eq!(c.line(&mut [&mut s]), "have 2 all");
    assert!(!c.fill(c.buf.len() + 1, &mut [&mut s]), "then it closes");
    assert!(drive(&mut [&mut s], |n| n[0].side.upload_connections() == 0));
}

#[test]
fn pieces_not_yet_verified_are_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let data = content(3 * PIECE_SIZE as usize, 11);
    let mut d = Node::new("d");
    start(&mut d, "f", &data, &dir.path().join("out"), vec![]);
    spin(&mut [&mut d], 3);
    let mut c = Client::connect(d.addr);
    c.send(&t("want g f"));
    assert_eq!(c.line(&mut [&mut d]), "have 3 b00");
    c.send("get g f 0");
    assert_eq!(c.line(&mut [&mut d]), "err not_held");
}

#[test]
fn pipelined_requests_from_a_slow_reader_are_all_answered_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let data = content(12 * PIECE_SIZE as usize, 12);
    let mut s = Node::new("s");
    share(&mut s, dir.path(), "f", &data);
    let mut c = Client::connect(s.addr);
    let mut reqs = format!("{}\n", t("want g f"));
    for i in 0..12 {
        reqs.push_str(&format!("get g f {i}\n"));
    }
    c.send(reqs.trim_end());
    // The seeder stops reading while its output is full; it must resume once we read.
    spin(&mut [&mut s], 20);
    assert_eq!(c.line(&mut [&mut s]), "have 12 all");
    for i in 0..12 {
        assert_eq!(c.line(&mut [&mut s]), format!("piece {i} {PIECE_SIZE}"));
        let got = c.bytes(PIECE_SIZE as usize, &mut [&mut s]);
        assert!(got == data[i * PIECE_SIZE as usize..(i + 1) * PIECE_SIZE as usize]);
    }
}

#[test]
fn a_peer_that_vanishes_mid_transfer_is_cleaned_up_and_the_download_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let data = content(6 * PIECE_SIZE as usize, 13);
    let n = npieces(&data);
    let mut s = Node::new("s");
    share(&mut s, dir.path(), "f", &data);
    // A reader that asks for everything and leaves without reading: the seeder notices and
    // frees the connection (and its buffers).
    {
        let mut c = Client::connect(s.addr);
        c.send("get g f 0\nget g f 1\nget g f 2");
        assert!(drive(&mut [&mut s], |n| n[0].side.upload_connections() == 1));
    }
    assert!(drive(&mut [&mut s], |n| n[0].side.upload_connections() == 0));
    // A "seeder" that accepts and never answers: its pieces must come back to the queue.
    let mute = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut d = Node::new("d");
    let dest = dir.path().join("out");
    let mute_info = PeerInfo {
        user: "mute".into(),
        addr: mute.local_addr().unwrap(),
        have: PieceSet::full(n),
        ticket: None,
        key: some_key(),
    };
    start(
        &mut d,
        "f",
        &data,
        &dest,
        vec![mute_info, s.info(PieceSet::full(n))],
    );
    assert!(drive(&mut [&mut d, &mut s], |n| n[0].completed(1)));
    assert_eq!(std::fs::read(&dest).unwrap(), data);
}

/// A peer that answers `want` (or `watch`) with "all" and never sends a piece: every piece requested
/// from it is late, and the download must still finish (endgame: a second peer is asked).
struct Liar {
    listener: std::net::TcpListener,
    key: FakeKey,
    conns: Vec<(SecureStream<TcpStream>, Vec<u8>)>,
    npieces: usize,
    /// `get`s received (and never answered).
    gets: usize,
}

impl Liar {
    fn new(npieces: usize) -> Liar {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        Liar {
            listener,
            key: FakeKey::new(),
            conns: Vec::new(),
            npieces,
            gets: 0,
        }
    }

    fn step(&mut self) {
        while let Ok((s, _)) = self.listener.accept() {
            let s = self.key.accept(s);
            self.conns.push((s, Vec::new()));
        }
        for (s, buf) in &mut self.conns {
            let mut chunk = [0u8; 4096];
            while let Ok(k) = s.read(&mut chunk) {
                if k == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..k]);
            }
            while let Some(p) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=p).collect();
                if line.starts_with(b"get ") {
                    self.gets += 1;
                }
                if line.starts_with(b"want") || line.starts_with(b"watch") {
                    let _ = s.write_all(format!("have {} all\n", self.npieces).as_bytes());
                    let _ = s.flush();
                }
            }
        }
    }
}

#[test]
fn pieces_stuck_at_a_silent_peer_are_fetched_from_another() {
    let dir = tempfile::tempdir().unwrap();
    let data = content(6 * PIECE_SIZE as usize + 3, 14);
    let n = npieces(&data);
    let mut liar = Liar::new(n);
    let mut s = Node::new("s");
    let mut d = Node::new("d");
    share(&mut s, dir.path(), "f", &data);
    let dest = dir.path().join("out");
    let liar_info = PeerInfo {
        user: "liar".into(),
        addr: liar.listener.local_addr().unwrap(),
        have: PieceSet::full(n),
        ticket: None,
        key: liar.key.hex(),
    };
    // The liar first, alone, so it holds requests before the honest seeder is known.
    d.side
        .start_download(1, spec("f", &data, dest.clone()), Instant::now())
        .unwrap();
    let first = d.ticketed(1, vec![liar_info.clone()]);
    d.side.add_peers(1, first);
    assert!(drive(&mut [&mut d], |_| {
        liar.step();
        liar.gets > 0
    }));
    assert_eq!(d.status(1).pieces_done, 0);
    let both = vec![liar_info, s.info(PieceSet::full(n))];
    d.add_sources(1, both);
    assert!(drive(&mut [&mut d, &mut s], |n| {
        liar.step();
        n[0].completed(1)
    }));
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    assert_eq!(
        d.side.peer_piece_counts(1),
        vec![("liar".to_string(), 0), ("s".to_string(), n as u64)]
    );
}

#[test]
fn a_seeder_found_at_a_new_address_is_reconnected() {
    let dir = tempfile::tempdir().unwrap();
    let data = content(2 * PIECE_SIZE as usize, 15);
    let n = npieces(&data);
    let mut s = Node::new("s");
    let mut d = Node::new("d");
    share(&mut s, dir.path(), "f", &data);
    // The tracker's first answer is stale: nobody listens there any more.
    let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let old = PeerInfo {
        user: "s".into(),
        addr: gone.local_addr().unwrap(),
        have: PieceSet::full(n),
        ticket: None,
        key: s.key.clone(),
    };
    drop(gone);
    let dest = dir.path().join("out");
    d.side
        .start_download(1, spec("f", &data, dest.clone()), Instant::now())
        .unwrap();
    let old = d.ticketed(1, vec![old]);
    d.side.add_peers(1, old);
    // Once the source is found dead, NeedPeers asks again, and now the answer is right.
    d.sources.insert(1, vec![s.info(PieceSet::full(n))]);
    assert!(drive(&mut [&mut d, &mut s], |n| n[0].completed(1)));
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    assert!(d
        .log
        .iter()
        .any(|e| matches!(e, PeerEvent::NeedPeers { id: 1 })));
}

#[test]
fn uploads_past_the_cap_are_told_busy() {
    let dir = tempfile::tempdir().unwrap();
    let data = content(10, 16);
    let mut s = Node::new("s");
    share(&mut s, dir.path(), "f", &data);
    let cap = groupshare::client::peers::seeder::MAX_UPLOADS;
    // From several loopback addresses, each within its share (`slots::MAX_UPLOADS_PER_ADDR`).
    let per_addr = groupshare::client::peers::slots::MAX_UPLOADS_PER_ADDR;
    let host = |i: usize| std::net::Ipv4Addr::new(127, 0, 0, 1 + (i / per_addr) as u8);
    let mut held: Vec<Client> = Vec::new();
    for i in 0..cap {
        let mut c = Client::connect_from(host(i), s.addr);
        c.send(&t("want g f"));
        assert_eq!(c.line(&mut [&mut s]), "have 1 all");
        held.push(c);
    }
    // Past the cap the seeder answers `err busy` in clear instead of a handshake (it costs
    // nothing and tells nothing); the downloader's channel reports it as the refusal.
    let mut extra = Client::connect_from(host(cap), s.addr);
    let start = Instant::now();
    let mut one = [0u8; 1];
    let refusal = loop {
        assert!(start.elapsed() < LIMIT, "no refusal");
        match extra.s.read(&mut one) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => spin(&mut [&mut s], 1),
            other => break other,
        }
    };
    let e = refusal.expect_err("a refusal, not bytes");
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");
    assert!(e.to_string().contains("err busy"), "{e}");
    // A slot freed is a slot usable again.
    drop(held.pop());
    spin(&mut [&mut s], 3);
    let mut again = Client::connect_from(host(cap - 1), s.addr);
    again.send(&t("want g f"));
    assert_eq!(again.line(&mut [&mut s]), "have 1 all");
}
