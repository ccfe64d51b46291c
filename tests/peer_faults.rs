//! Downloads against misbehaving peers. A fake peer (a std `TcpListener` served by its own
//! thread, speaking the peer protocol by hand) answers `want` and `get` wrongly in one chosen
//! way. First it is the only source, until it has actually misbehaved; then an honest seeder
//! (a real `PeerSide`) is added, and the download must complete with a byte-identical file, all
//! of it from the honest seeder. With only a bad peer, the destination never appears, the
//! download stays alive, and it does not reconnect in a busy loop.

mod peer_support;

use groupshare::client::peers::store::part_path;
use groupshare::client::peers::{DownloadState, PeerInfo};
use groupshare::net::secure_stream::SecureStream;
use groupshare::pieces::{piece_len, PieceSet, PIECE_SIZE};
use peer_support::*;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Turns every node as the app's loop does, each turn sleeping until the peer side's next
/// deadline (at most 2 ms), until `done` holds; false if `LIMIT` passed first.
fn drive(nodes: &mut [&mut Node], done: impl FnMut(&[&mut Node]) -> bool) -> bool {
    drive_with(
        nodes,
        |n| {
            n.turn_paced(Duration::from_millis(2));
        },
        done,
    )
}

/// How the fake peer breaks the protocol.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Bad {
    /// `piece` header and half the payload, then silence; the socket stays open.
    StallMidPiece,
    /// `piece` header and half the payload, then close.
    CloseMidPiece,
    /// A `piece` header announcing one byte more than the piece has (and that many bytes).
    LongerPiece,
    /// A `piece` header announcing one byte less than the piece has (and that many bytes).
    ShorterPiece,
    /// A `piece` header for another index than the one asked.
    WrongIndex,
    /// Binary garbage instead of a `piece` reply.
    Garbage,
    /// An unknown header line instead of the `have` reply.
    UnknownHeader,
    /// `have` with a bitfield one byte too long for the file's piece count.
    WrongBitfield,
    /// `have` for a different piece count.
    WrongCount,
    /// `have ... all`, then `err not_held` to every `get`.
    ClaimsThenRefuses,
}

/// The fake peer: its own thread, stopped and joined on drop.
struct FakePeer {
    addr: SocketAddr,
    /// Its key, as the "tracker" publishes it.
    key: String,
    stop: Arc<AtomicBool>,
    /// Connections accepted.
    accepts: Arc<AtomicUsize>,
    /// Times it misbehaved (answered wrongly).
    misbehaved: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for FakePeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().expect("the fake peer's thread panicked");
        }
    }
}

struct FakeConn {
    s: SecureStream<TcpStream>,
    buf: Vec<u8>,
    /// Stalled: read and ignore everything from now on.
    mute: bool,
}

/// Blocking write with a deadline, on a socket otherwise read non-blocking.
fn send_all(s: &mut SecureStream<TcpStream>, bytes: &[u8]) -> bool {
    s.socket().set_nonblocking(false).unwrap();
    s.socket()
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let ok = s.write_all(bytes).and_then(|_| s.flush()).is_ok();
    s.socket().set_nonblocking(true).unwrap();
    ok
}

impl FakePeer {
    fn start(bad: Bad, data: Arc<Vec<u8>>) -> FakePeer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let accepts = Arc::new(AtomicUsize::new(0));
        let misbehaved = Arc::new(AtomicUsize::new(0));
        let (st, ac, mb) = (stop.clone(), accepts.clone(), misbehaved.clone());
        let fake_key = FakeKey::new();
        let key = fake_key.hex();
        let thread = std::thread::spawn(move || {
            let mut conns: Vec<FakeConn> = Vec::new();
            let n = data.len().div_ceil(PIECE_SIZE as usize);
            let size = data.len() as u64;
            // Bounded by the test's own deadline as well as by `stop`.
            let start = Instant::now();
            while !st.load(Ordering::SeqCst) && start.elapsed() < 2 * LIMIT {
                while let Ok((s, _)) = listener.accept() {
                    let s = fake_key.accept(s);
                    ac.fetch_add(1, Ordering::SeqCst);
                    conns.push(FakeConn {
                        s,
                        buf: Vec::new(),
                        mute: false,
                    });
                }
                let mut keep = Vec::new();
                for mut c in conns.drain(..) {
                    let mut chunk = [0u8; 4096];
                    let mut open = true;
                    loop {
                        match c.s.read(&mut chunk) {
                            Ok(0) => {
                                open = false;
                                break;
                            }
                            Ok(k) => c.buf.extend_from_slice(&chunk[..k]),
                            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                            Err(_) => {
                                open = false;
                                break;
                            }
                        }
                    }
                    while open && !c.mute {
                        let Some(p) = c.buf.iter().position(|&b| b == b'\n') else {
                            break;
                        };
                        let line: Vec<u8> = c.buf.drain(..=p).collect();
                        let line = String::from_utf8_lossy(&line[..p]).to_string();
                        let words: Vec<&str> = line.split(' ').collect();
                        let reply: Vec<u8> = match words.as_slice() {
                            ["want", ..] => match bad {
                                Bad::UnknownHeader => {
                                    mb.fetch_add(1, Ordering::SeqCst);
                                    b"hello there 1 2\n".to_vec()
                                }
                                Bad::WrongBitfield => {
                                    mb.fetch_add(1, Ordering::SeqCst);
                                    let hex = "ff".repeat(n.div_ceil(8) + 1);
                                    format!("have {n} b{hex}\n").into_bytes()
                                }
                                Bad::WrongCount => {
                                    mb.fetch_add(1, Ordering::SeqCst);
                                    format!("have {} all\n", n + 1).into_bytes()
                                }
                                _ => format!("have {n} all\n").into_bytes(),
                            },
                            ["get", _, _, i] => {
                                let i: usize = i.parse().unwrap();
                                let len = piece_len(size, i as u64) as usize;
                                let piece = &data[i * PIECE_SIZE as usize..][..len];
                                mb.fetch_add(1, Ordering::SeqCst);
                                match bad {
                                    Bad::StallMidPiece | Bad::CloseMidPiece => {
                                        let mut r = format!("piece {i} {len}\n").into_bytes();
                                        r.extend_from_slice(&piece[..len / 2]);
                                        if bad == Bad::StallMidPiece {
                                            c.mute = true;
                                        } else {
                                            open = false;
                                        }
                                        r
                                    }
                                    Bad::LongerPiece => {
                                        let mut r = format!("piece {i} {}\n", len + 1).into_bytes();
                                        r.extend_from_slice(piece);
                                        r.push(0);
                                        r
                                    }
                                    Bad::ShorterPiece => {
                                        let mut r = format!("piece {i} {}\n", len - 1).into_bytes();
                                        r.extend_from_slice(&piece[..len - 1]);
                                        r
                                    }
                                    Bad::WrongIndex => {
                                        let j = (i + 1) % n;
                                        let jl = piece_len(size, j as u64) as usize;
                                        let mut r = format!("piece {j} {jl}\n").into_bytes();
                                        r.extend_from_slice(&data[j * PIECE_SIZE as usize..][..jl]);
                                        r
                                    }
                                    Bad::Garbage => {
                                        let mut r = vec![0u8, 0xff, 0xfe, b'\r', 0x80];
                                        r.extend_from_slice(b"\x1b[2J\tpiece piece\n\xc3\x28\n");
                                        r
                                    }
                                    Bad::ClaimsThenRefuses => b"err not_held\n".to_vec(),
                                    // These misbehave on `want`; a `get` means the download
                                    // used a peer it should have dropped.
                                    Bad::UnknownHeader | Bad::WrongBitfield | Bad::WrongCount => {
                                        panic!("{bad:?}: got {line:?} after a bad `have`")
                                    }
                                }
                            }
                            _ => b"err bad_request\n".to_vec(),
                        };
                        if !send_all(&mut c.s, &reply) {
                            open = false;
                        }
                    }
                    if open {
                        keep.push(c);
                    } else {
                        let _ = c.s.socket().shutdown(std::net::Shutdown::Both);
                    }
                }
                conns = keep;
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        FakePeer {
            addr,
            key,
            stop,
            accepts,
            misbehaved,
            thread: Some(thread),
        }
    }

    fn info(&self, n: usize) -> PeerInfo {
        PeerInfo {
            user: "fake".into(),
            addr: self.addr,
            have: PieceSet::full(n),
            ticket: None,
            key: self.key.clone(),
        }
    }
}

/// 5 pieces, the last one short (so a "longer" header for it still parses).
fn test_data(seed: u64) -> Arc<Vec<u8>> {
    Arc::new(content(4 * PIECE_SIZE as usize + 7_777, seed))
}

/// The fake peer alone until it has misbehaved, then an honest seeder too: the download
/// completes byte-identical, every piece from the honest seeder.
fn bad_peer_then_good_seeder(bad: Bad, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let data = test_data(seed);
    let n = npieces(&data);
    let fake = FakePeer::start(bad, data.clone());
    let mut s = Node::new("good");
    let mut d = Node::new("d");
    let src = dir.path().join("src");
    std::fs::write(&src, &*data).unwrap();
    s.side
        .share(GROUP, "f", src, data.len() as u64, hashes_of(&data));
    let dest = dir.path().join("out");
    start(&mut d, "f", &data, &dest, vec![fake.info(n)]);
    assert!(
        drive(&mut [&mut d], |_| fake.misbehaved.load(Ordering::SeqCst)
            > 0),
        "{bad:?}: the fake peer was never asked"
    );
    assert_eq!(d.status(1).pieces_done, 0, "{bad:?}");
    assert!(!dest.exists(), "{bad:?}");
    d.add_sources(1, vec![fake.info(n), s.full_info(n)]);
    assert!(
        drive(&mut [&mut d, &mut s], |n| n[0].completed(1)),
        "{bad:?}: did not complete: {:?}",
        d.status(1)
    );
    assert!(
        std::fs::read(&dest).unwrap() == *data,
        "{bad:?}: content differs"
    );
    assert!(!part_path(&dest).exists());
    assert_eq!(
        d.side.peer_piece_counts(1),
        vec![("fake".to_string(), 0), ("good".to_string(), n as u64)],
        "{bad:?}"
    );
    drop(fake);
}

#[test]
fn a_peer_that_stalls_mid_piece_does_not_hold_the_download() {
    // The stalled piece (and the others queued at the fake) are asked of the good seeder
    // through the endgame: no need to wait out the 20 s piece timeout.
    bad_peer_then_good_seeder(Bad::StallMidPiece, 1);
}

#[test]
fn a_peer_that_closes_mid_piece_does_not_hold_the_download() {
    bad_peer_then_good_seeder(Bad::CloseMidPiece, 2);
}

#[test]
fn a_piece_header_longer_than_the_piece_drops_the_peer() {
    bad_peer_then_good_seeder(Bad::LongerPiece, 3);
}

#[test]
fn a_piece_header_shorter_than_the_piece_drops_the_peer() {
    bad_peer_then_good_seeder(Bad::ShorterPiece, 4);
}

#[test]
fn a_piece_header_for_another_index_drops_the_peer() {
    bad_peer_then_good_seeder(Bad::WrongIndex, 5);
}

#[test]
fn garbage_instead_of_a_piece_drops_the_peer() {
    bad_peer_then_good_seeder(Bad::Garbage, 6);
}

#[test]
fn an_unknown_header_line_drops_the_peer() {
    bad_peer_then_good_seeder(Bad::UnknownHeader, 7);
}

#[test]
fn a_have_bitfield_of_the_wrong_size_drops_the_peer() {
    bad_peer_then_good_seeder(Bad::WrongBitfield, 8);
}

#[test]
fn a_have_for_another_piece_count_drops_the_peer() {
    bad_peer_then_good_seeder(Bad::WrongCount, 9);
}

#[test]
fn a_peer_that_claims_pieces_then_refuses_them_does_not_hold_the_download() {
    bad_peer_then_good_seeder(Bad::ClaimsThenRefuses, 10);
}

/// With only a bad peer: no destination file, no failure, no panic, and no busy loop — the
/// loop sleeps between turns and reconnects are paced (about one a second at most).
#[test]
fn with_only_a_bad_peer_nothing_is_produced_and_nothing_spins() {
    for (k, bad) in [
        Bad::CloseMidPiece,
        Bad::Garbage,
        Bad::ClaimsThenRefuses,
        Bad::WrongBitfield,
    ]
    .into_iter()
    .enumerate()
    {
        let dir = tempfile::tempdir().unwrap();
        let data = test_data(20 + k as u64);
        let n = npieces(&data);
        let fake = FakePeer::start(bad, data.clone());
        let mut d = Node::new("d");
        let dest = dir.path().join("out");
        start(&mut d, "f", &data, &dest, vec![fake.info(n)]);
        // A bounded number of turns, each sleeping until the next deadline (at most 50 ms):
        // a few seconds of a real client's life with this peer.
        let turns = 80;
        let mut busy = 0;
        let started = Instant::now();
        for _ in 0..turns {
            if d.turn_paced(Duration::from_millis(50)) {
                busy += 1;
            }
            assert!(!dest.exists(), "{bad:?}: a destination from a bad peer");
        }
        let secs = started.elapsed().as_secs_f64();
        assert!(fake.misbehaved.load(Ordering::SeqCst) > 0, "{bad:?}");
        let st = d.status(1);
        assert_eq!(st.state, DownloadState::Downloading, "{bad:?}");
        assert_eq!(st.pieces_done, 0, "{bad:?}");
        assert!(d.side.has_active_downloads());
        assert!(part_path(&dest).exists() && !dest.exists(), "{bad:?}");
        // Reconnects are paced: 2 s after a failure, or at once when the "tracker" answers a
        // NeedPeers, which comes at most once a second while no source is connected.
        let accepts = fake.accepts.load(Ordering::SeqCst);
        eprintln!("{bad:?}: {accepts} connections in {secs:.1} s, {busy} busy turns");
        let bound = 4 + 2 * secs.ceil() as usize;
        assert!(
            accepts <= bound,
            "{bad:?}: {accepts} connections in {secs:.1} s: reconnecting in a loop"
        );
        assert!(
            busy < turns / 2,
            "{bad:?}: {busy} of {turns} turns did not sleep: spinning"
        );
        drop(fake);
    }
}
