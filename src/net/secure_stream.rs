//! A socket with a `SecureChannel` on it, readable and writable as a plain byte stream, so the
//! line framer (`Conn`), the peer codec and the blocking test harness run on it unchanged.
//!
//! - `read` returns decrypted bytes. It reads the socket until the caller's buffer is full or
//!   the socket has nothing more (`WouldBlock`, or a short read after some plaintext), so the
//!   callers' edge-triggered "drained" logic stays true: a read that returns less than asked
//!   means the kernel had no more. Handshake records are answered inside `read`.
//! - `write` encrypts at most `WRITE_CHUNK` bytes a call and only when the previous records
//!   have left for the socket, so the caller's own output queue — and its limits — still hold
//!   the backlog; `flush` writes the records left over and says `WouldBlock` while some remain
//!   (`Conn::flush` asks it, so interest in WRITABLE follows).
//! - A stream made `gated` (an initiator that must check who answered) writes nothing once the
//!   handshake is done — not message 3, not the early data — until the caller has looked at
//!   `remote_static()` and called `approve()`; a wrong key is closed without a byte more.
//!
//! A tracker at its connection limit answers a plain line `0 err too_many_connections ...`
//! instead of a handshake (it does not spend a handshake on a connection it refuses), and a
//! seeder at its upload limit `err busy`; an initiator that reads such a line reports it as the
//! error.

use super::conn::write_pending;
use super::identity::{Identity, KEY_LEN};
use super::secure::{ChannelError, ChannelKeys, Conversation, Role, SecureChannel};
use std::io::{self, ErrorKind, Read, Write};

/// Largest socket read in one syscall (as `Conn`'s own read chunk).
const READ_CHUNK: usize = 256 * 1024;
/// Plaintext encrypted per `write` call: large enough for full records and few calls, small
/// enough that the caller's queue (and its limits) keeps the backlog.
const WRITE_CHUNK: usize = 256 * 1024;
/// Bytes of the first reply kept to recognise a plaintext refusal line.
const REFUSAL_PEEK: usize = 200;

thread_local! {
    /// The socket read buffer, one per thread (each loop is one thread): a buffer per
    /// connection would cost 256 KiB for every idle one.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A responder's keys until the first bytes arrive: the channel (a Noise handshake state, a few
/// KiB) is made only then, so a connection that never speaks costs a few hundred bytes.
struct Lazy {
    identity: Identity,
    conversation: Conversation,
    /// Also accept the tracker link with this PSK (see `accept_link_too`).
    link_psk: Option<[u8; 32]>,
}

pub struct SecureStream<S> {
    sock: S,
    /// `None` only for a responder that has received nothing yet (`lazy` holds its keys).
    ch: Option<Box<SecureChannel>>,
    lazy: Option<Box<Lazy>>,
    /// Ciphertext read but not yet taken by the channel (its plaintext buffer was full).
    pending: Vec<u8>,
    /// Early plaintext queued before the handshake ended (bounded by the channel).
    early: usize,
    gated: bool,
    approved: bool,
    eof: bool,
    /// The last socket read was short (or would block): the kernel had nothing more then, so
    /// plaintext in hand is returned rather than waiting (blocking) for more, and a
    /// non-blocking caller gets a new readiness edge for anything newer.
    drained: bool,
    /// The first bytes the other side sent during the handshake, to recognise a refusal line.
    first: Vec<u8>,
    conversation: Conversation,
}

/// Length of XX's first message: the initiator's ephemeral key, empty payload in clear.
const XX_FIRST_MESSAGE: usize = 32;
/// Length of XXpsk0's first message: the ephemeral key and the tag of its (empty, encrypted)
/// payload, which the PSK keys from the start.
pub const XXPSK0_FIRST_MESSAGE: usize = XX_FIRST_MESSAGE + 16;

impl<S> std::fmt::Debug for SecureStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecureStream")
            .field("channel", &self.ch)
            .finish()
    }
}

impl<S> SecureStream<S> {
    /// Wraps a connected socket: an initiator's first handshake message goes out with the first
    /// `flush`, `write` or `read`.
    pub fn new(
        sock: S,
        role: Role,
        identity: &Identity,
        psk: Option<&[u8; 32]>,
        conversation: Conversation,
        gated: bool,
    ) -> Result<SecureStream<S>, ChannelError> {
        let (ch, lazy) = if role == Role::Responder && psk.is_none() {
            let lazy = Lazy {
                identity: identity.clone(),
                conversation,
                link_psk: None,
            };
            (None, Some(Box::new(lazy)))
        } else {
            let keys = ChannelKeys {
                identity,
                psk,
                conversation,
            };
            (Some(Box::new(SecureChannel::new(role, keys)?)), None)
        };
        Ok(SecureStream {
            sock,
            ch,
            lazy,
            pending: Vec::new(),
            early: 0,
            gated,
            approved: !gated,
            eof: false,
            drained: false,
            first: Vec::new(),
            conversation,
        })
    }

    /// A client-tracker responder that becomes a tracker-tracker (XXpsk0) responder instead when
    /// the first record has the length of an XXpsk0 first message: one listening port serves
    /// both conversations, and the PSK still decides — a client that sends 48 bytes fails it.
    pub fn accept_link_too(&mut self, psk: [u8; 32]) {
        if let Some(lazy) = self.lazy.as_mut() {
            lazy.link_psk = Some(psk);
        }
    }

    /// The conversation this channel carries (settled by the first record for a responder
    /// made with `accept_link_too`).
    pub fn conversation(&self) -> Conversation {
        self.conversation
    }

    /// The same channel over another form of the socket (a std stream made a mio one).
    pub fn map_socket<T>(self, f: impl FnOnce(S) -> T) -> SecureStream<T> {
        SecureStream {
            sock: f(self.sock),
            ch: self.ch,
            lazy: self.lazy,
            pending: self.pending,
            early: self.early,
            gated: self.gated,
            approved: self.approved,
            eof: self.eof,
            drained: self.drained,
            first: self.first,
            conversation: self.conversation,
        }
    }

    pub fn socket(&self) -> &S {
        &self.sock
    }

    pub fn socket_mut(&mut self) -> &mut S {
        &mut self.sock
    }

    pub fn is_established(&self) -> bool {
        self.ch.as_ref().is_some_and(|c| c.is_established())
    }

    /// The other side's proven static key (after the handshake).
    pub fn remote_static(&self) -> Option<&[u8; KEY_LEN]> {
        self.ch.as_ref()?.remote_static()
    }

    pub fn remote_fingerprint(&self) -> Option<super::identity::Fingerprint> {
        self.ch.as_ref()?.remote_fingerprint()
    }

    /// The Noise handshake hash, for binding a proof to this channel.
    pub fn channel_binding(&self) -> Option<[u8; 32]> {
        self.ch.as_ref()?.handshake_hash()?.try_into().ok()
    }

    /// Records waiting for the socket (none before a lazy responder's channel exists).
    fn output(&self) -> &[u8] {
        self.ch.as_ref().map_or(&[], |c| c.output())
    }

    /// The handshake is done and the caller must check `remote_static()` before anything is
    /// sent (a gated stream).
    pub fn awaiting_approval(&self) -> bool {
        self.gated && !self.approved && self.is_established()
    }

    /// The caller accepts the other side's key: message 3 and queued data may go.
    pub fn approve(&mut self) {
        self.approved = true;
    }

    /// Records waiting for the socket.
    pub fn output_pending(&self) -> usize {
        self.output().len()
    }

    fn may_write(&self) -> bool {
        self.approved || !self.is_established()
    }

    fn channel_error(&self, e: ChannelError) -> io::Error {
        let refusal = self.first.starts_with(b"0 err ") || self.first.starts_with(b"err ");
        if !self.is_established() && refusal {
            let line = self.first.split(|&b| b == b'\n').next().unwrap_or(&[]);
            let line = String::from_utf8_lossy(line);
            return io::Error::new(
                ErrorKind::ConnectionRefused,
                format!("refused before the handshake: {}", line.trim_end()),
            );
        }
        io::Error::new(ErrorKind::InvalidData, e.to_string())
    }
}

impl SecureStream<mio::net::TcpStream> {
    /// A non-blocking connect to `addr` with this side's first handshake message queued, as an
    /// initiator; `gated` as in `new`. The caller registers it and waits for writability, as
    /// for any non-blocking connect. The one way the client dials a tracker or a seeder.
    pub fn dial(
        addr: std::net::SocketAddr,
        identity: &Identity,
        conversation: Conversation,
        gated: bool,
    ) -> io::Result<Self> {
        let sock = mio::net::TcpStream::connect(addr)?;
        SecureStream::new(sock, Role::Initiator, identity, None, conversation, gated)
            .map_err(|e| io::Error::other(e.to_string()))
    }
}

impl<S: Read + Write> SecureStream<S> {
    /// Writes pending records to the socket; `Ok(true)` when none are left. Nothing is written
    /// while a gated stream waits for approval.
    fn push_output(&mut self) -> io::Result<bool> {
        if !self.may_write() {
            return Ok(self.output().is_empty());
        }
        let Some(ch) = self.ch.as_mut() else {
            return Ok(true);
        };
        if ch.output().is_empty() {
            return Ok(true);
        }
        let mut pos = 0;
        let r = write_pending(&mut self.sock, ch.output(), &mut pos);
        ch.consume_output(pos);
        r
    }

    /// Makes a lazy responder's channel once the first two bytes are in: the length of the
    /// first record says which conversation (`accept_link_too`).
    fn materialize(&mut self, fresh: &[u8]) -> io::Result<()> {
        let Some(lazy) = self.lazy.as_ref() else {
            return Ok(());
        };
        let head: Vec<u8> = self.pending.iter().chain(fresh).take(2).copied().collect();
        let psk = match lazy.link_psk {
            Some(_) if head.len() < 2 => return Ok(()), // decided by the next bytes
            Some(psk)
                if usize::from(u16::from_be_bytes([head[0], head[1]])) == XXPSK0_FIRST_MESSAGE =>
            {
                Some(psk)
            }
            _ => None,
        };
        let conversation = if psk.is_some() {
            Conversation::TrackerTracker
        } else {
            lazy.conversation
        };
        let keys = ChannelKeys {
            identity: &lazy.identity,
            psk: psk.as_ref(),
            conversation,
        };
        let ch = SecureChannel::new(Role::Responder, keys)
            .map_err(|e| io::Error::other(e.to_string()))?;
        self.ch = Some(Box::new(ch));
        self.lazy = None;
        self.conversation = conversation;
        Ok(())
    }

    /// Hands ciphertext to the channel, keeping what it could not take yet.
    fn feed(&mut self, fresh: &[u8]) -> io::Result<()> {
        if !self.is_established() && self.first.len() < REFUSAL_PEEK {
            let take = (REFUSAL_PEEK - self.first.len()).min(fresh.len());
            self.first.extend_from_slice(&fresh[..take]);
        }
        if self.ch.is_none() {
            self.materialize(fresh)?;
        }
        let Some(ch) = self.ch.as_mut() else {
            self.pending.extend_from_slice(fresh);
            return Ok(());
        };
        let handshaking = !ch.is_established();
        let result = if self.pending.is_empty() {
            // The usual case: straight from the read buffer, no copy.
            ch.receive(fresh).map(|taken| {
                self.pending.extend_from_slice(&fresh[taken..]);
            })
        } else {
            let mut bytes = std::mem::take(&mut self.pending);
            bytes.extend_from_slice(fresh);
            ch.receive(&bytes).map(|taken| {
                bytes.drain(..taken);
                self.pending = bytes;
            })
        };
        if let Err(e) = result {
            return Err(self.channel_error(e));
        }
        // A handshake reply goes out at once: nothing else would flush it. Records of the
        // caller's own writes wait for its `write`/`flush`, so a failed write is reported
        // there and never hides the bytes still to be read.
        if handshaking {
            self.push_output()?;
        }
        // Idle connections keep nothing they no longer need.
        if self.pending.is_empty() && self.pending.capacity() > 0 {
            self.pending = Vec::new();
        }
        if self.is_established() && self.first.capacity() > 0 {
            self.first = Vec::new();
        }
        Ok(())
    }

    /// Drives a blocking socket through the handshake (tests, operator tools, the bench).
    pub fn handshake_blocking(&mut self) -> io::Result<()> {
        self.push_output()?;
        while !self.is_established() {
            if self.eof {
                return Err(io::Error::new(
                    ErrorKind::UnexpectedEof,
                    "the other side closed during the secure handshake",
                ));
            }
            self.read_socket_once()?;
        }
        self.push_output()?;
        Ok(())
    }

    /// One socket read fed to the channel; true when the read was short (the kernel had no
    /// more) or hit the end.
    fn read_socket_once(&mut self) -> io::Result<bool> {
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut buf) => self.read_socket_into(&mut buf),
            // Not reached (nothing here re-enters), but never panic on it.
            Err(_) => self.read_socket_into(&mut Vec::new()),
        })
    }

    fn read_socket_into(&mut self, buf: &mut Vec<u8>) -> io::Result<bool> {
        if buf.len() < READ_CHUNK {
            buf.resize(READ_CHUNK, 0);
        }
        loop {
            match self.sock.read(&mut buf[..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(true);
                }
                Ok(n) => {
                    self.drained = n < READ_CHUNK;
                    self.feed(&buf[..n])?;
                    return Ok(self.drained);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    self.drained = e.kind() == ErrorKind::WouldBlock;
                    return Err(e);
                }
            }
        }
    }
}

impl<S: Read + Write> Read for SecureStream<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut copied = 0;
        loop {
            if let Some(ch) = self.ch.as_mut() {
                copied += ch.read_plaintext(&mut buf[copied..]);
            }
            if copied == buf.len() || (self.drained && copied > 0) {
                return Ok(copied);
            }
            if !self.pending.is_empty() {
                let buffered = |s: &Self| s.ch.as_ref().map_or(0, |c| c.plaintext().len());
                let before = buffered(self);
                self.feed(&[])?;
                if buffered(self) > before {
                    continue;
                }
            }
            if self.eof {
                return Ok(copied);
            }
            if self.awaiting_approval() {
                // The caller checks who answered before anything else happens.
                return Err(ErrorKind::WouldBlock.into());
            }
            match self.read_socket_once() {
                Ok(_) => {}
                Err(e) if copied > 0 && e.kind() == ErrorKind::WouldBlock => return Ok(copied),
                Err(e) => return Err(e),
            }
        }
    }
}

impl<S: Read + Write> Write for SecureStream<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let Some(ch) = self.ch.as_mut() else {
            // A responder that has heard nothing cannot send (Noise's responder speaks second).
            return Err(ErrorKind::WouldBlock.into());
        };
        if !ch.is_established() {
            let room = super::secure::MAX_EARLY_PLAINTEXT.saturating_sub(self.early);
            let n = room.min(buf.len());
            if n == 0 {
                return Err(ErrorKind::WouldBlock.into());
            }
            if let Err(e) = ch.send(&buf[..n]) {
                return Err(self.channel_error(e));
            }
            self.early += n;
            self.push_output()?;
            return Ok(n);
        }
        if !self.push_output()? || !self.may_write() {
            return Err(ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(WRITE_CHUNK);
        if let Some(Err(e)) = self.ch.as_mut().map(|c| c.send(&buf[..n])) {
            return Err(self.channel_error(e));
        }
        match self.push_output() {
            Ok(_) => Ok(n),
            // The bytes are encrypted and queued: they count as written; `flush` sends them.
            Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(n),
            Err(e) => Err(e),
        }
    }

    /// `WouldBlock` while records wait for the socket (or for approval).
    fn flush(&mut self) -> io::Result<()> {
        if self.push_output()? && self.output().is_empty() {
            Ok(())
        } else {
            Err(ErrorKind::WouldBlock.into())
        }
    }
}

impl<S: mio::event::Source> mio::event::Source for SecureStream<S> {
    fn register(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        self.sock.register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        self.sock.reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &mio::Registry) -> io::Result<()> {
        self.sock.deregister(registry)
    }
}

/// A blocking initiator over a connected std socket, handshake done: the test harness, the
/// operator's `--status` and the bench use it.
pub fn connect_blocking(
    sock: std::net::TcpStream,
    identity: &Identity,
    psk: Option<&[u8; 32]>,
    conversation: Conversation,
) -> io::Result<SecureStream<std::net::TcpStream>> {
    let mut s = SecureStream::new(sock, Role::Initiator, identity, psk, conversation, false)
        .map_err(|e| io::Error::other(e.to_string()))?;
    s.handshake_blocking()?;
    Ok(s)
}

/// The same stream with a cloned socket is not possible (the channel state is one); blocking
/// users that want a reader and a writer wrap the stream in a `BufReader` and write through
/// `get_mut()`.
#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    fn pair(gated: bool) -> (SecureStream<TcpStream>, SecureStream<TcpStream>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        let ia = Identity::generate().unwrap();
        let ib = Identity::generate().unwrap();
        let c = Conversation::ClientTracker;
        let ini = SecureStream::new(a, Role::Initiator, &ia, None, c, gated).unwrap();
        let res = SecureStream::new(b, Role::Responder, &ib, None, c, false).unwrap();
        (ini, res)
    }

    #[test]
    fn bytes_cross_both_ways_and_a_big_write_arrives_whole() {
        let (mut a, mut b) = pair(false);
        let t = std::thread::spawn(move || {
            b.handshake_blocking().unwrap();
            let mut got = vec![0u8; 3 * 1024 * 1024];
            b.read_exact(&mut got).unwrap();
            b.write_all(b"done\n").unwrap();
            b.flush().unwrap();
            got
        });
        let data: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
        a.handshake_blocking().unwrap();
        a.write_all(&data).unwrap();
        a.flush().unwrap();
        let mut line = [0u8; 5];
        a.read_exact(&mut line).unwrap();
        assert_eq!(&line, b"done\n");
        assert_eq!(t.join().unwrap(), data);
        assert_eq!(a.channel_binding().map(|h| h.len()), Some(32));
    }

    #[test]
    fn a_gated_initiator_sends_nothing_after_the_handshake_until_approved() {
        let (mut a, mut b) = pair(true);
        a.write_all(b"secret early data\n").unwrap();
        let _ = a.flush();
        let t = std::thread::spawn(move || {
            let mut buf = [0u8; 18];
            b.read_exact(&mut buf).map(|_| buf)
        });
        // Read message 2; the channel is then established but held.
        while !a.is_established() {
            let mut x = [0u8; 1];
            match a.read(&mut x) {
                Ok(_) | Err(_) => {}
            }
        }
        assert!(a.awaiting_approval());
        assert!(a.output_pending() > 0, "message 3 and early data held back");
        assert!(a.flush().is_err());
        a.approve();
        a.flush().unwrap();
        assert_eq!(&t.join().unwrap().unwrap(), b"secret early data\n");
    }

    #[test]
    fn one_responder_serves_clients_and_the_psk_link_by_the_first_record() {
        let psk = [7u8; 32];
        for (link, client_psk) in [(false, None), (true, Some(psk)), (true, Some([8u8; 32]))] {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let (b, _) = l.accept().unwrap();
            let ib = Identity::generate().unwrap();
            let t = std::thread::spawn(move || {
                let c = Conversation::ClientTracker;
                let mut r = SecureStream::new(b, Role::Responder, &ib, None, c, false).unwrap();
                r.accept_link_too(psk);
                r.handshake_blocking().map(|_| r.conversation())
            });
            let ia = Identity::generate().unwrap();
            let conv = if link {
                Conversation::TrackerTracker
            } else {
                Conversation::ClientTracker
            };
            let ours = connect_blocking(a, &ia, client_psk.as_ref(), conv);
            let theirs = t.join().unwrap();
            if client_psk == Some([8u8; 32]) {
                assert!(theirs.is_err(), "a wrong PSK never makes a link");
            } else {
                assert!(ours.is_ok());
                assert_eq!(theirs.unwrap(), conv);
            }
        }
    }

    #[test]
    fn a_plaintext_refusal_instead_of_a_handshake_is_reported_as_such() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut b, _) = l.accept().unwrap();
        b.write_all(b"0 err too_many_connections try later\n")
            .unwrap();
        drop(b);
        let id = Identity::generate().unwrap();
        let e = connect_blocking(a, &id, None, Conversation::ClientTracker).unwrap_err();
        assert!(e.to_string().contains("too_many_connections"), "{e}");
    }
}

#[cfg(test)]
mod idle_size {
    use super::*;

    /// A responder that has received nothing holds its keys, not a handshake state (measured:
    /// about 3.7 KB each otherwise): the tracker keeps many such connections.
    #[test]
    fn a_silent_responder_has_no_channel_yet() {
        let id = Identity::generate().unwrap();
        let c = Conversation::ClientTracker;
        let mut s = SecureStream::new((), Role::Responder, &id, None, c, false).unwrap();
        assert!(s.ch.is_none());
        s.accept_link_too([1; 32]);
        assert_eq!(s.conversation(), Conversation::ClientTracker);
        assert!(!s.is_established() && s.output_pending() == 0);
    }
}
