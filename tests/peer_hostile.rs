//! The seeder against hostile requests: path tricks, over-long names, groups and files it does
//! not share, indexes out of range or not numbers. Each gets an `err` line and the connection
//! stays usable (an over-long line: `err line_too_long`, then a clean close). A secret file
//! lies beside the shared one, under a valid name; none of its bytes is ever sent, and a file
//! not shared gets the same `err forbidden` as a request without a good ticket.

mod peer_support;

use groupshare::net::secure_stream::SecureStream;
use groupshare::pieces::PIECE_SIZE;
use peer_support::*;
use std::collections::HashSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// How long the seeder's loop polls in one turn (it ignores its deadlines: it only serves).
const TURN: Duration = Duration::from_millis(2);

/// A raw peer connection inside the secure channel (the hostile bytes travel encrypted, as
/// a malicious downloader's would); every byte it receives is kept in `all`.
struct Client {
    s: SecureStream<TcpStream>,
    buf: Vec<u8>,
    all: Vec<u8>,
    closed: bool,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let s = FakeKey::me().connect(addr);
        Client {
            s,
            buf: Vec::new(),
            all: Vec::new(),
            closed: false,
        }
    }

    fn send_raw(&mut self, bytes: &[u8], seeder: &mut Node) {
        let mut off = 0;
        let start = Instant::now();
        while off < bytes.len() {
            assert!(start.elapsed() < LIMIT, "cannot send");
            match self.s.write(&bytes[off..]) {
                Ok(k) => off += k,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.pump();
                    seeder.turn_for(TURN);
                }
                Err(e) => panic!("send: {e}"),
            }
        }
        // Records the channel could not write yet.
        while let Err(e) = self.s.flush() {
            assert!(e.kind() == ErrorKind::WouldBlock, "send: {e}");
            assert!(start.elapsed() < LIMIT, "cannot send");
            self.pump();
            seeder.turn_for(TURN);
        }
    }

    /// Reads what is available.
    fn pump(&mut self) {
        let mut chunk = [0u8; 65536];
        loop {
            match self.s.read(&mut chunk) {
                Ok(0) => {
                    self.closed = true;
                    return;
                }
                Ok(k) => {
                    self.buf.extend_from_slice(&chunk[..k]);
                    self.all.extend_from_slice(&chunk[..k]);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                    self.closed = true;
                    return;
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    fn fill(&mut self, n: usize, seeder: &mut Node) -> bool {
        let start = Instant::now();
        while self.buf.len() < n && !self.closed && start.elapsed() < LIMIT {
            self.pump();
            seeder.turn_for(TURN);
        }
        self.buf.len() >= n
    }

    fn line(&mut self, seeder: &mut Node) -> String {
        loop {
            if let Some(p) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=p).collect();
                return String::from_utf8_lossy(&line[..p]).into_owned();
            }
            let want = self.buf.len() + 1;
            assert!(self.fill(want, seeder), "no reply line (closed or silent)");
        }
    }

    fn ask(&mut self, req: &[u8], seeder: &mut Node) -> String {
        let mut bytes = req.to_vec();
        bytes.push(b'\n');
        self.send_raw(&bytes, seeder);
        self.line(seeder)
    }
}

/// True if any 16 consecutive bytes of `secret` occur in `seen`.
fn leaks(secret: &[u8], seen: &[u8]) -> bool {
    let grams: HashSet<&[u8]> = secret.windows(16).collect();
    seen.windows(16).any(|w| grams.contains(w))
}

#[test]
fn hostile_requests_get_err_lines_and_never_a_byte_outside_the_shared_set() {
    let dir = tempfile::tempdir().unwrap();
    let shared_dir = dir.path().join("shared");
    std::fs::create_dir(&shared_dir).unwrap();
    let data = content(2 * PIECE_SIZE as usize, 1);
    let secret = content(64 * 1024, 2);
    let shared = shared_dir.join("f");
    std::fs::write(&shared, &data).unwrap();
    // Beside the shared file, and one directory up, under valid names.
    std::fs::write(shared_dir.join("secret"), &secret).unwrap();
    std::fs::write(dir.path().join("secret"), &secret).unwrap();
    let mut s = Node::new("s");
    s.side.share(
        GROUP,
        "f",
        shared.clone(),
        data.len() as u64,
        hashes_of(&data),
    );
    let abs = dir.path().join("secret").display().to_string();
    let long_file = "a".repeat(256);
    let long_group = "g".repeat(65);
    let huge_name = "s".repeat(60_000);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"get g ../secret 0".to_vec(), "bad_request"),
        (b"get g ../shared/secret 0".to_vec(), "bad_request"),
        (b"get g ./secret 0".to_vec(), "bad_request"),
        (b"get g /etc/passwd 0".to_vec(), "bad_request"),
        (format!("get g {abs} 0").into_bytes(), "bad_request"),
        (format!("want g {abs}").into_bytes(), "bad_request"),
        (b"get g .. 0".to_vec(), "bad_request"),
        (b"get g . 0".to_vec(), "bad_request"),
        (b"want g ..".to_vec(), "bad_request"),
        (b"get .. secret 0".to_vec(), "bad_request"),
        (b"get g ..%2fsecret 0".to_vec(), "bad_request"),
        (b"get g f/../secret 0".to_vec(), "bad_request"),
        (b"get g secret\0 0".to_vec(), "bad_request"),
        (b"get g \xc0\xae\xc0\xaesecret 0".to_vec(), "bad_request"),
        // Valid names, not shared: looked up in the catalog, never on disk, and answered like
        // a missing ticket, so nobody learns which files exist.
        (b"get g secret 0".to_vec(), "forbidden"),
        (b"want g secret".to_vec(), "forbidden"),
        (t("want g secret").into_bytes(), "forbidden"),
        (b"get shared secret 0".to_vec(), "forbidden"),
        (b"get other f 0".to_vec(), "forbidden"),
        (b"want other f".to_vec(), "forbidden"),
        (t("want other f").into_bytes(), "forbidden"),
        (format!("get g {long_file} 0").into_bytes(), "bad_request"),
        (format!("get {long_group} f 0").into_bytes(), "bad_request"),
        (format!("want g {huge_name}").into_bytes(), "bad_request"),
        (b"get g f 2".to_vec(), "bad_index"),
        (b"get g f 524287".to_vec(), "bad_index"),
        (b"get g f 524288".to_vec(), "bad_request"),
        (b"get g f 99999999999999999999999".to_vec(), "bad_request"),
        (b"get g f -1".to_vec(), "bad_request"),
        (b"get g f -0".to_vec(), "bad_request"),
        (b"get g f +1".to_vec(), "bad_request"),
        (b"get g f abc".to_vec(), "bad_request"),
        (b"get g f 0x1".to_vec(), "bad_request"),
        (b"get g f 1.0".to_vec(), "bad_request"),
        (b"get g f 1e3".to_vec(), "bad_request"),
        (b"get g f \xd9\xa1".to_vec(), "bad_request"), // an Arabic-Indic digit one
        (b"get g f".to_vec(), "bad_request"),
        (b"get g f 0 0".to_vec(), "bad_request"),
        (b"GET g f 0".to_vec(), "bad_request"),
        (b"".to_vec(), "bad_request"),
        (b"\xff\xfe\x00".to_vec(), "bad_request"),
    ];
    let mut c = Client::connect(s.addr);
    // The connection shows a good ticket for f first, so the index checks below are reached.
    assert_eq!(c.ask(t("want g f").as_bytes(), &mut s), "have 2 all");
    for (req, reason) in &cases {
        let got = c.ask(req, &mut s);
        assert_eq!(
            got,
            format!("err {reason}"),
            "request {:?}",
            String::from_utf8_lossy(&req[..req.len().min(80)])
        );
        assert!(!c.closed);
    }
    // Still usable: a real request gets the real bytes.
    assert_eq!(c.ask(t("want g f").as_bytes(), &mut s), "have 2 all");
    assert_eq!(c.ask(b"get g f 1", &mut s), format!("piece 1 {PIECE_SIZE}"));
    assert!(c.fill(PIECE_SIZE as usize, &mut s));
    let got: Vec<u8> = c.buf.drain(..PIECE_SIZE as usize).collect();
    assert!(got == data[PIECE_SIZE as usize..]);

    // Pipelined: a burst of bad requests, answered one `err` each, in order.
    let mut burst = Vec::new();
    for (req, _) in &cases {
        burst.extend_from_slice(req);
        burst.push(b'\n');
    }
    burst.extend_from_slice(b"get g f 0\n");
    c.send_raw(&burst, &mut s);
    for (req, reason) in &cases {
        assert_eq!(
            c.line(&mut s),
            format!("err {reason}"),
            "{:?}",
            String::from_utf8_lossy(&req[..req.len().min(80)])
        );
    }
    assert_eq!(c.line(&mut s), format!("piece 0 {PIECE_SIZE}"));
    assert!(c.fill(PIECE_SIZE as usize, &mut s));
    let got: Vec<u8> = c.buf.drain(..PIECE_SIZE as usize).collect();
    assert!(got == data[..PIECE_SIZE as usize]);

    // A line past the limit: one err, then a clean close (EOF, not a reset).
    let mut long = b"get g ".to_vec();
    long.extend(std::iter::repeat_n(b'x', 70_000));
    long.push(b'\n');
    c.send_raw(&long, &mut s);
    assert_eq!(c.line(&mut s), "err line_too_long");
    assert!(!c.fill(1, &mut s) && c.closed, "the connection closes");
    let start = Instant::now();
    while s.side.upload_connections() > 0 && start.elapsed() < LIMIT {
        s.turn_for(TURN);
    }
    assert_eq!(s.side.upload_connections(), 0);

    assert!(
        !leaks(&secret, &c.all),
        "bytes of an unshared file were sent"
    );
    // The detector itself works: the shared file's bytes were sent and are found.
    assert!(leaks(&data, &c.all));
}
