//! The tracker's client protocol spoken by hand over a blocking socket: tagged requests out
//! (typed `Verb`s, or raw text for tests whose point is a malformed request), whole replies in
//! through the protocol's own `ReplyReader`. `LineConn` returns errors (bench, demo); `Conn`
//! panics on anything unexpected (tests, where a panic is the failure report).
//!
//! Both speak through the client side of the secure channel (a fresh key per connection, as a
//! client process has), so raw bytes a hostile test sends arrive inside the channel, where the
//! tracker's parsers see them.

use crate::auth::login as proofs;
use crate::auth::scram::{self, ClientKeys};
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

    /// The text to send on `conn`, after any exchange it needs first (a login's
    /// `login_begin`). Most requests need none.
    fn text_on(&self, _conn: &mut Conn) -> std::io::Result<String> {
        Ok(self.text())
    }
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
    /// The channel's handshake hash (for proofs bound to this connection).
    pub fn channel_binding(&self) -> Option<[u8; 32]> {
        self.reader.get_ref().channel_binding()
    }

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

    /// `create_user` as the client does it: a verifier made here with `iterations`.
    pub fn create_user(
        &mut self,
        user: &str,
        password: &str,
        iterations: u32,
    ) -> Result<(), String> {
        self.ok(&v::create_user_with(user, password, iterations))
            .map(|_| ())
    }

    /// The whole login exchange (`login_begin`, proof, `login`, the tracker's proof checked);
    /// returns the session token and secret (hex).
    pub fn login(
        &mut self,
        user: &str,
        password: &str,
        addr: &str,
    ) -> Result<(String, String), String> {
        let begin = v::login_begin(user);
        let words = match self.req(&begin)? {
            Reply::Ok(w) => w,
            r => return Err(format!("login_begin was refused: {r:?}")),
        };
        let cb = self.channel_binding();
        let (keys, msg, proof) = prove(user, password, &begin, &words, cb)
            .ok_or_else(|| format!("login_begin answered {words:?}"))?;
        let login = Verb::Login {
            user: user.to_string(),
            proof,
            addr: addr.to_string(),
        };
        match self.ok(&login)? {
            Reply::Ok(w) => check_login_reply(&keys, &msg, &w),
            r => Err(format!("login answered {r:?}")),
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
        let id = Identity::generate().map_err(std::io::Error::other)?;
        Conn::connect_as(addr, &id)
    }

    /// A connection whose channel proves `id` (a test that then speaks to peers as the same
    /// client, with tickets bound to this key).
    pub fn connect_as(addr: SocketAddr, id: &Identity) -> std::io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let key = pieces::to_hex(id.public());
        Ok(Conn {
            reader: BufReader::new(connect_blocking(
                stream,
                id,
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
        self.try_send_raw(bytes).expect("send");
    }

    /// As `send_raw`, with an error when the connection is gone.
    pub fn try_send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        write_through(self.reader.get_mut(), bytes)
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
        let text = req.text_on(self)?;
        self.tag += 1;
        let l = format!("{} {}\n", self.tag, text);
        write_through(self.reader.get_mut(), l.as_bytes())?;
        Ok(self.read_typed()?.1)
    }

    pub fn typed<R: RequestText + ?Sized>(&mut self, req: &R) -> Reply {
        self.try_typed(req)
            .unwrap_or_else(|e| panic!("request '{}' failed: {e}", req.text()))
    }

    pub fn try_req<R: RequestText + ?Sized>(&mut self, req: &R) -> std::io::Result<Vec<String>> {
        let text = req.text_on(self)?;
        self.tag += 1;
        let l = format!("{} {}\n", self.tag, text);
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
        self.login_as(user, &format!("pw-{user}"), "127.0.0.1:1");
    }

    /// Logs in (checking the tracker's proof) and returns the session token and secret.
    pub fn login_as(&mut self, user: &str, password: &str, addr: &str) -> (String, String) {
        let begin = v::login_begin(user);
        let words = match self.typed(&begin) {
            Reply::Ok(w) => w,
            r => panic!("login_begin {user} refused: {r:?}"),
        };
        let cb = self.channel_binding();
        let (keys, msg, proof) =
            prove(user, password, &begin, &words, cb).expect("login_begin reply");
        let login = Verb::Login {
            user: user.to_string(),
            proof,
            addr: addr.to_string(),
        };
        match self.typed(&login) {
            Reply::Ok(w) => check_login_reply(&keys, &msg, &w).expect("the tracker's proof"),
            r => panic!("login {user} refused: {r:?}"),
        }
    }

    /// `login` as `user` (password `pw-<user>`) for a test that expects the connection may die
    /// under it: an error instead of a panic when it does or the login is refused.
    pub fn try_login(&mut self, user: &str) -> std::io::Result<()> {
        let fail = |why: String| std::io::Error::other(why);
        let begin = v::login_begin(user);
        let Reply::Ok(words) = self.try_typed(&begin)? else {
            return Err(fail(format!("login_begin {user} refused")));
        };
        let cb = self.channel_binding();
        let (keys, msg, proof) = prove(user, &format!("pw-{user}"), &begin, &words, cb)
            .ok_or_else(|| fail(format!("login_begin answered {words:?}")))?;
        let login = Verb::Login {
            user: user.to_string(),
            proof,
            addr: "127.0.0.1:1".to_string(),
        };
        match self.try_typed(&login)? {
            Reply::Ok(w) => check_login_reply(&keys, &msg, &w).map(|_| ()).map_err(fail),
            r => Err(fail(format!("login {user} refused: {r:?}"))),
        }
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

/// The client's side of a `login_begin` answer (`<salt> <iterations> <snonce>`): the keys,
/// the AuthMessage (no channel binding on these plain test sockets) and the proof in hex.
pub fn prove(
    user: &str,
    password: &str,
    begin: &Verb,
    words: &[String],
    cb: Option<[u8; 32]>,
) -> Option<(ClientKeys, Vec<u8>, String)> {
    let Verb::LoginBegin { cnonce, .. } = begin else {
        return None;
    };
    let [salt, iterations, snonce] = words else {
        return None;
    };
    let salt = scram::lower_hex::<{ scram::SALT_LEN }>(salt)?;
    let iterations = scram::parse_count(iterations)?;
    let keys = ClientKeys::derive(password, &salt, iterations);
    let msg = proofs::auth_message(user, cnonce, snonce, &salt, iterations, cb);
    let proof = pieces::to_hex(&keys.proof(&msg));
    Some((keys, msg, proof))
}

/// Token and secret from a login's `ok <token> <secret> <tracker-proof>`, once the tracker's
/// proof is checked.
pub fn check_login_reply(
    keys: &ClientKeys,
    msg: &[u8],
    words: &[String],
) -> Result<(String, String), String> {
    let [token, secret, tracker_proof] = words else {
        return Err(format!("login answered {words:?}"));
    };
    let proof = pieces::from_hex(tracker_proof).unwrap_or_default();
    if !keys.tracker_proof_is_valid(msg, &proof) {
        return Err("the tracker's proof is wrong".to_string());
    }
    Ok((token.clone(), secret.clone()))
}

/// Short constructors of the requests tests send most, so a test reads like the protocol.
pub mod v {
    use super::{Conn, RequestText};
    use crate::auth::login as proofs;
    use crate::auth::scram::{self, ClientKeys};
    use crate::protocol::tracker::{Reply, Verb};

    fn s(x: &str) -> String {
        x.to_string()
    }

    pub fn hello(instance: u64) -> Verb {
        Verb::Hello { instance }
    }
    /// `create_user` with a verifier made as the client makes it, at the fewest iterations
    /// (test trackers run with `--kdf-iterations 4096`).
    pub fn create_user(user: &str, password: &str) -> Verb {
        create_user_with(user, password, scram::MIN_ITERATIONS)
    }
    pub fn create_user_with(user: &str, password: &str, iterations: u32) -> Verb {
        let salt = proofs::random_array::<{ scram::SALT_LEN }>().expect("random salt");
        let keys = ClientKeys::derive(password, &salt, iterations);
        Verb::CreateUser {
            user: s(user),
            verifier: keys.verifier(salt, iterations).encode(),
        }
    }
    pub fn login_begin(user: &str) -> Verb {
        Verb::LoginBegin {
            user: s(user),
            cnonce: proofs::random_hex(16).expect("random nonce"),
        }
    }
    /// A password login: `login_begin` first, then `login` with the proof, on the same
    /// connection (see `RequestText::text_on`).
    pub fn login(user: &str, password: &str, addr: &str) -> Login {
        Login {
            user: s(user),
            password: s(password),
            addr: s(addr),
        }
    }
    /// `attach` proving knowledge of `secret` (hex), bound to the connection it is sent on.
    pub fn attach(token: &str, secret: &str, addr: &str) -> Attach {
        Attach {
            token: s(token),
            secret: s(secret),
            addr: s(addr),
        }
    }

    /// An attach as a test writes it; its proof is made for the connection that sends it.
    pub struct Attach {
        pub token: String,
        pub secret: String,
        pub addr: String,
    }

    impl Attach {
        /// The request with its proof bound to channel `cb`.
        pub fn verb(&self, cb: Option<[u8; 32]>) -> Verb {
            let secret = scram::lower_hex::<32>(&self.secret).unwrap_or([0; 32]);
            let proof = proofs::attach_proof(&secret, &self.token, cb);
            Verb::Attach {
                token: self.token.clone(),
                proof: crate::pieces::to_hex(&proof),
                addr: self.addr.clone(),
            }
        }
    }

    impl RequestText for Attach {
        fn text(&self) -> String {
            format!("attach {} <proof of the secret> {}", self.token, self.addr)
        }

        fn text_on(&self, conn: &mut Conn) -> std::io::Result<String> {
            Ok(self.verb(conn.channel_binding()).encode())
        }
    }

    /// A login as a test writes it; sent as the exchange the protocol needs.
    pub struct Login {
        pub user: String,
        pub password: String,
        pub addr: String,
    }

    impl RequestText for Login {
        fn text(&self) -> String {
            format!(
                "login {} <proof of {}> {}",
                self.user, self.password, self.addr
            )
        }

        /// Runs `login_begin` and returns the `login` line with the proof. A refused
        /// `login_begin` (already logged in, not serving) still sends a `login`, with a proof
        /// that cannot match, so the test sees the tracker's refusal of the login itself.
        fn text_on(&self, conn: &mut Conn) -> std::io::Result<String> {
            let begin = login_begin(&self.user);
            let words = match conn.try_typed(&begin)? {
                Reply::Ok(w) => w,
                _ => Vec::new(),
            };
            let cb = conn.channel_binding();
            let proof = super::prove(&self.user, &self.password, &begin, &words, cb)
                .map_or_else(|| "00".repeat(32), |(_, _, p)| p);
            let login = Verb::Login {
                user: self.user.clone(),
                proof,
                addr: self.addr.clone(),
            };
            Ok(login.encode())
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
