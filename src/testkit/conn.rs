//! The tracker's client protocol spoken by hand over a blocking socket: tagged requests out
//! (typed `Verb`s, or raw text for tests whose point is a malformed request), whole replies in
//! through the protocol's own `ReplyReader`. `LineConn` returns errors (bench, demo); `Conn`
//! panics on anything unexpected (tests, where a panic is the failure report).
//!
//! Both speak through the client side of the secure channel (a fresh key per connection, as a
//! client process has), so raw bytes a hostile test sends arrive inside the channel, where the
//! tracker's parsers see them.

use crate::net::identity::Identity;
use crate::net::secure::Conversation;
use crate::net::secure_stream::{connect_blocking, SecureStream};
use crate::pieces;
use crate::protocol::tracker::{Reply, ReplyReader, Request, Verb};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A blocking secure channel to a tracker, as the client's side (handshake done).
pub type SecureConn = SecureStream<TcpStream>;

/// Connects and completes the client side of the handshake with a fresh key.
pub fn secure_connect(addr: SocketAddr, timeout: Duration) -> std::io::Result<SecureConn> {
    let stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    let _ = stream.set_nodelay(true);
    secure_over(stream)
}

/// The client side of the handshake over a connected socket (read timeout already set).
pub fn secure_over(stream: TcpStream) -> std::io::Result<SecureConn> {
    let id = Identity::generate().map_err(std::io::Error::other)?;
    connect_blocking(stream, &id, None, Conversation::ClientTracker)
}

/// Writes all of `bytes` through the channel and pushes the records out.
fn write_through(s: &mut SecureConn, bytes: &[u8]) -> std::io::Result<()> {
    s.write_all(bytes)?;
    s.flush()
}

/// What a connection sends after the tag: a typed request (`Verb`), or raw text for tests
/// whose point is a malformed or hostile request.
pub trait RequestText {
    fn text(&self) -> String;
}

impl RequestText for str {
    fn text(&self) -> String {
        self.to_string()
    }
}

impl RequestText for String {
    fn text(&self) -> String {
        self.clone()
    }
}

impl RequestText for Verb {
    fn text(&self) -> String {
        self.encode()
    }
}

/// A blocking line connection for set-up and control requests, with errors as text.
pub struct LineConn {
    reader: BufReader<SecureConn>,
    replies: ReplyReader,
    /// The last tag sent; the next request gets `tag + 1`.
    pub tag: u64,
}

impl LineConn {
    pub fn connect(addr: SocketAddr) -> Result<LineConn, String> {
        let stream = secure_connect(addr, Duration::from_secs(3))
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        Ok(LineConn {
            reader: BufReader::new(stream),
            replies: ReplyReader::default(),
            tag: 0,
        })
    }

    pub fn read_line(&mut self) -> Result<String, String> {
        let mut l = String::new();
        match self.reader.read_line(&mut l) {
            Ok(0) => Err("the server closed the connection".to_string()),
            Ok(_) => Ok(l.trim_end().to_string()),
            Err(e) => Err(format!("reading a reply: {e}")),
        }
    }

    /// Reads one whole tracker reply (a `list` with its data lines).
    pub fn read_reply(&mut self) -> Result<Reply, String> {
        loop {
            let line = self.read_line()?;
            if let Some((_, reply)) = self.replies.feed(&line)? {
                return Ok(reply);
            }
        }
    }

    pub fn send(&mut self, verb: &Verb) -> Result<(), String> {
        self.tag += 1;
        let l = format!("{}\n", Request::new(self.tag, verb.clone()).encode());
        write_through(self.reader.get_mut(), l.as_bytes())
            .map_err(|e| format!("sending {}: {e}", verb.name()))
    }

    pub fn req(&mut self, verb: &Verb) -> Result<Reply, String> {
        self.send(verb)?;
        self.read_reply()
    }

    /// A request that must succeed.
    pub fn ok(&mut self, verb: &Verb) -> Result<Reply, String> {
        match self.req(verb)? {
            Reply::Err { code, message } => {
                Err(format!("{} was refused: {code} {message}", verb.name()))
            }
            r => Ok(r),
        }
    }

    /// The channel, for handing to the load generator; Err if replies are still buffered.
    pub fn into_stream(self) -> Result<SecureConn, String> {
        if !self.reader.buffer().is_empty() {
            return Err("unexpected extra data from the server after set-up".to_string());
        }
        Ok(self.reader.into_inner())
    }
}

/// A protocol connection: tags requests and reads whole replies with the protocol's reader.
pub struct Conn {
    reader: BufReader<SecureConn>,
    /// This connection's own static key (hex), as the tracker records and publishes it.
    key: String,
    replies: ReplyReader,
    tag: u64,
}

impl Conn {
    pub fn connect(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let id = Identity::generate().map_err(std::io::Error::other)?;
        let key = pieces::to_hex(id.public());
        Ok(Conn {
            reader: BufReader::new(connect_blocking(
                stream,
                &id,
                None,
                Conversation::ClientTracker,
            )?),
            key,
            replies: ReplyReader::default(),
            tag: 0,
        })
    }

    /// Sends bytes as they are, inside the channel (hostile tests).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        write_through(self.reader.get_mut(), bytes).expect("send");
    }

    /// The channel's handshake hash (for proofs bound to this connection).
    pub fn channel_binding(&self) -> Option<[u8; 32]> {
        self.reader.get_ref().channel_binding()
    }

    /// This connection's own static key (64 hex), the `<key>` of its peer lines.
    pub fn client_key(&self) -> &str {
        &self.key
    }

    /// The tracker's key as proven by the handshake.
    pub fn tracker_key(&self) -> Option<[u8; 32]> {
        self.reader.get_ref().remote_static().copied()
    }

    pub fn read_line(&mut self) -> std::io::Result<String> {
        let mut l = String::new();
        let n = self.reader.read_line(&mut l)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(l.trim_end_matches(['\n', '\r']).to_string())
    }

    /// Reads one whole reply with its tag.
    pub fn read_typed(&mut self) -> std::io::Result<(u64, Reply)> {
        loop {
            let line = self.read_line()?;
            let got = self
                .replies
                .feed(&line)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            if let Some(r) = got {
                return Ok(r);
            }
        }
    }

    /// Reads one reply: its first line (tag removed) and, for `list`, its data lines.
    pub fn read_reply(&mut self) -> std::io::Result<Vec<String>> {
        let (tag, reply) = self.read_typed()?;
        let text = reply.encode(tag);
        let mut lines = text.split('\n').map(str::to_string);
        let first = lines.next().unwrap_or_default();
        let first = first.split_once(' ').map(|x| x.1).unwrap_or("").to_string();
        Ok(std::iter::once(first).chain(lines).collect())
    }

    /// Sends a request and returns its typed reply.
    pub fn try_typed<R: RequestText + ?Sized>(&mut self, req: &R) -> std::io::Result<Reply> {
        self.tag += 1;
        let l = format!("{} {}\n", self.tag, req.text());
        write_through(self.reader.get_mut(), l.as_bytes())?;
        Ok(self.read_typed()?.1)
    }

    pub fn typed<R: RequestText + ?Sized>(&mut self, req: &R) -> Reply {
        self.try_typed(req)
            .unwrap_or_else(|e| panic!("request '{}' failed: {e}", req.text()))
    }

    pub fn try_req<R: RequestText + ?Sized>(&mut self, req: &R) -> std::io::Result<Vec<String>> {
        self.tag += 1;
        let l = format!("{} {}\n", self.tag, req.text());
        write_through(self.reader.get_mut(), l.as_bytes())?;
        self.read_reply()
    }

    /// Sends a request and returns the reply: `[first line without tag, data lines...]`.
    pub fn req<R: RequestText + ?Sized>(&mut self, req: &R) -> Vec<String> {
        self.try_req(req)
            .unwrap_or_else(|e| panic!("request '{}' failed: {e}", req.text()))
    }

    /// Asserts the reply is `ok...` and returns its first line.
    pub fn ok<R: RequestText + ?Sized>(&mut self, req: &R) -> String {
        let r = self.req(req);
        assert!(r[0].starts_with("ok"), "'{}' → {r:?}", req.text());
        r[0].clone()
    }

    /// Asserts the reply is an error with this code.
    pub fn err<R: RequestText + ?Sized>(&mut self, req: &R, code: &str) {
        let r = self.req(req);
        assert!(
            r[0].starts_with(&format!("err {code} ")),
            "'{}' → {r:?}, expected err {code}",
            req.text()
        );
    }

    pub fn login(&mut self, user: &str) {
        self.ok(&v::login(user, &format!("pw-{user}"), "127.0.0.1:1"));
    }

    pub fn user(&mut self, user: &str) {
        self.ok(&v::create_user(user, &format!("pw-{user}")));
        self.login(user);
    }

    /// `upload_file` with made-up hashes for a file of `size` bytes.
    pub fn upload(&mut self, group: &str, file: &str, size: u64, seed: u8) -> Vec<String> {
        let npieces = size.div_ceil(512 * 1024);
        self.tag += 1;
        let verb = Verb::UploadFile {
            group: group.to_string(),
            file: file.to_string(),
            size,
            npieces,
        };
        let mut text = format!("{}\n", Request::new(self.tag, verb).encode());
        let hashes: Vec<[u8; 20]> = (0..npieces).map(|i| [(i as u8) ^ seed; 20]).collect();
        for line in pieces::hash_lines(&hashes) {
            text.push_str(&line);
            text.push('\n');
        }
        write_through(self.reader.get_mut(), text.as_bytes()).expect("send upload");
        self.read_reply().expect("upload reply")
    }
}

/// Short constructors of the requests tests send most, so a test reads like the protocol.
pub mod v {
    use crate::protocol::tracker::Verb;

    fn s(x: &str) -> String {
        x.to_string()
    }

    pub fn hello(instance: u64) -> Verb {
        Verb::Hello { instance }
    }
    pub fn create_user(user: &str, password: &str) -> Verb {
        Verb::CreateUser {
            user: s(user),
            password: s(password),
        }
    }
    pub fn login(user: &str, password: &str, addr: &str) -> Verb {
        Verb::Login {
            user: s(user),
            password: s(password),
            addr: s(addr),
        }
    }
    pub fn attach(token: &str, addr: &str) -> Verb {
        Verb::Attach {
            token: s(token),
            addr: s(addr),
        }
    }
    pub fn create_group(group: &str) -> Verb {
        Verb::CreateGroup { group: s(group) }
    }
    pub fn join_group(group: &str) -> Verb {
        Verb::JoinGroup { group: s(group) }
    }
    pub fn leave_group(group: &str) -> Verb {
        Verb::LeaveGroup { group: s(group) }
    }
    pub fn list_requests(group: &str) -> Verb {
        Verb::ListRequests { group: s(group) }
    }
    pub fn accept_request(group: &str, user: &str) -> Verb {
        Verb::AcceptRequest {
            group: s(group),
            user: s(user),
        }
    }
    pub fn list_files(group: &str) -> Verb {
        Verb::ListFiles { group: s(group) }
    }
    pub fn download_file(group: &str, file: &str) -> Verb {
        Verb::DownloadFile {
            group: s(group),
            file: s(file),
        }
    }
    pub fn peers(group: &str, file: &str) -> Verb {
        Verb::Peers {
            group: s(group),
            file: s(file),
        }
    }
    pub fn have(group: &str, file: &str, pieces: &[usize]) -> Verb {
        Verb::Have {
            group: s(group),
            file: s(file),
            pieces: pieces.to_vec(),
        }
    }
    pub fn stop_share(group: &str, file: &str) -> Verb {
        Verb::StopShare {
            group: s(group),
            file: s(file),
        }
    }
}
