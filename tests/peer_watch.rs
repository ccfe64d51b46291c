//! `watch` and `has` from the downloader's side, against a scripted peer speaking the protocol
//! by hand over loopback: the downloader tells a watched peer what it holds and what it
//! verifies, and asks for a piece only once the peer has offered it.

mod peer_support;

use groupshare::net::secure_stream::SecureStream;
use groupshare::pieces::{PieceSet, PIECE_SIZE};
use peer_support::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

/// A peer that watches its one connection: answers `watch` with `offer`, serves `get`s of
/// offered pieces, and records every line it receives.
struct Scripted {
    listener: TcpListener,
    key: FakeKey,
    conn: Option<(SecureStream<TcpStream>, Vec<u8>)>,
    data: Vec<u8>,
    npieces: usize,
    offer: PieceSet,
    lines: Vec<String>,
}

impl Scripted {
    fn new(data: &[u8], offer: PieceSet) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        Scripted {
            listener,
            key: FakeKey::new(),
            conn: None,
            data: data.to_vec(),
            npieces: npieces(data),
            offer,
            lines: Vec::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        if let Some((s, _)) = &mut self.conn {
            s.socket().set_nonblocking(false).unwrap();
            s.write_all(bytes).unwrap();
            s.flush().unwrap();
            s.socket().set_nonblocking(true).unwrap();
        }
    }

    /// Tells the downloader it may now ask for piece `i`.
    fn push(&mut self, i: usize) {
        self.offer.insert(i);
        self.send(format!("has {i}\n").as_bytes());
    }

    fn step(&mut self) {
        if self.conn.is_none() {
            if let Ok((s, _)) = self.listener.accept() {
                self.conn = Some((self.key.accept(s), Vec::new()));
            }
        }
        let mut got = Vec::new();
        if let Some((s, buf)) = &mut self.conn {
            let mut chunk = [0u8; 4096];
            while let Ok(k) = s.read(&mut chunk) {
                if k == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..k]);
            }
            while let Some(p) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=p).collect();
                got.push(String::from_utf8_lossy(&line[..p]).to_string());
            }
        }
        for line in got {
            let words: Vec<&str> = line.split(' ').collect();
            match words.as_slice() {
                ["watch", ..] => {
                    let reply = format!("have {} {}\n", self.npieces, self.offer.to_wire());
                    self.send(reply.as_bytes());
                }
                ["get", _, _, i] => {
                    let i: usize = i.parse().unwrap();
                    assert!(self.offer.contains(i), "asked for {i}, never offered");
                    let p = PIECE_SIZE as usize;
                    let piece = self.data[i * p..]
                        .iter()
                        .take(p)
                        .copied()
                        .collect::<Vec<_>>();
                    let mut reply = format!("piece {i} {}\n", piece.len()).into_bytes();
                    reply.extend_from_slice(&piece);
                    self.send(&reply);
                }
                _ => {}
            }
            self.lines.push(line);
        }
    }

    fn saw(&self, line: &str) -> bool {
        self.lines.iter().any(|l| l == line)
    }
}

#[test]
fn a_watched_peer_hears_what_the_download_holds_and_offers_pieces_one_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let data = content(6 * PIECE_SIZE as usize, 31);
    let n = npieces(&data);
    let dest = dir.path().join("out");
    // A .part holding pieces 0-3: verified on resume, before the peer is watched.
    let mut part = vec![0u8; data.len()];
    part[..4 * PIECE_SIZE as usize].copy_from_slice(&data[..4 * PIECE_SIZE as usize]);
    leave_part(&dest, &part);

    let mut offer = PieceSet::empty(n);
    offer.insert(5);
    let mut peer = Scripted::new(&data, offer);
    let mut d = Node::new("d");
    let info = groupshare::client::peers::PeerInfo {
        user: "peer".into(),
        addr: peer.listener.local_addr().unwrap(),
        have: PieceSet::full(n),
        ticket: None,
        key: peer.key.hex(),
    };
    start(&mut d, "f", &data, &dest, vec![info]);

    // Piece 5 is offered: it is asked for and, once verified, announced back.
    assert!(drive(&mut [&mut d], |_| {
        peer.step();
        peer.saw("has 5")
    }));
    assert!(
        peer.lines
            .first()
            .is_some_and(|l| l.starts_with("watch g f me ")),
        "a watch with the ticket: {:?}",
        peer.lines
    );
    assert_eq!(
        peer.lines.get(1).map(String::as_str),
        Some("has 0-3"),
        "what the download held before watching comes first: {:?}",
        peer.lines
    );
    assert!(peer.saw("get g f 5"));
    assert!(
        !peer.lines.iter().any(|l| l == "get g f 4"),
        "piece 4 was never offered: {:?}",
        peer.lines
    );
    // Offered now: asked for at once, and the download completes.
    peer.push(4);
    assert!(drive(&mut [&mut d], |n| {
        peer.step();
        n[0].completed(1)
    }));
    // (The last piece is not announced: completing closes the connection, which says more.)
    assert!(peer.saw("get g f 4"));
    assert!(
        !peer.lines.iter().any(|l| l.starts_with("want")),
        "a watched peer is never polled with want: {:?}",
        peer.lines
    );
    assert_eq!(std::fs::read(&dest).unwrap(), data);
}
