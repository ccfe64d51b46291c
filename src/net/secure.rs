//! The secure channel: a Noise handshake, then authenticated encryption of a byte stream, with
//! no I/O of its own. The poll loop feeds it the ciphertext it read (in whatever fragments the
//! socket gave) and writes out what it produced; the plaintext it yields is the same byte stream
//! the other side sent, so the line framers and the peer codec run on it unchanged.
//!
//! Wire format: a sequence of records, each a 2-byte big-endian length and that many bytes of
//! Noise message. The first records are the handshake messages (three for XX), then every record
//! is one transport message: at most 65,535 bytes, as Noise requires, of which 16 are the
//! authentication tag. Large writes are split into as many records as needed.
//!
//! Suite: `Noise_XX_25519_AESGCM_SHA256` (`..._XXpsk0_...` where a pre-shared key is given);
//! see docs/ARCHITECTURE.md, "Secure channels", for the measurements behind the choice.
//!
//! Any failure — a record that fails authentication (tampered, replayed, reordered, or keyed with
//! another PSK), an oversized handshake record, a handshake message the state machine does not
//! expect — is an error after which the channel refuses everything: the caller closes the
//! connection. Nothing here panics on input.

use super::identity::{Fingerprint, Identity, KEY_LEN};
use snow::params::NoiseParams;
use std::fmt;
use std::io;

/// The Noise suite without a pre-shared key: client ↔ tracker and client ↔ client.
pub const SUITE: &str = "Noise_XX_25519_AESGCM_SHA256";
/// The suite with a pre-shared key mixed in before the first message (tracker ↔ tracker):
/// each side learns at the first message it reads that the other holds the key.
pub const SUITE_PSK: &str = "Noise_XXpsk0_25519_AESGCM_SHA256";

/// Noise's limit on one message, tag included; the 2-byte length prefix cannot say more.
pub const MAX_RECORD: usize = 65_535;
/// AES-GCM's authentication tag.
const TAG_LEN: usize = 16;
/// Plaintext carried by one full record.
pub const MAX_RECORD_PLAINTEXT: usize = MAX_RECORD - TAG_LEN;
/// Length prefix of every record.
const HEADER_LEN: usize = 2;
/// Largest handshake record accepted. Our XX messages are at most 32 + 48 + 16 + 16 bytes
/// (ephemeral, encrypted static, payload tag, PSK tag); a claim of more is not our protocol and
/// must not make us buffer 64 KiB before anyone has proved anything.
pub const MAX_HANDSHAKE_RECORD: usize = 256;
/// Decrypted bytes held for the caller. `receive` stops consuming ciphertext once another
/// record would not fit, so a caller that takes its plaintext slowly bounds this channel's
/// memory at this plus one partial record (about 1.1 MiB) per connection.
pub const MAX_PLAINTEXT_BUFFERED: usize = 1024 * 1024;
/// Plaintext queued by `send` before the handshake is done: the first lines a client sends
/// (a login, a `want`) are small; more than this before the peer has even answered is abuse.
pub const MAX_EARLY_PLAINTEXT: usize = 256 * 1024;
/// Encrypted output not yet taken by the caller. Above the tracker's 32 MiB drop limit for a
/// client that stops reading (and a download's few pieces in flight), so the callers' own
/// limits act first; this one only keeps a caller bug from growing without end.
pub const MAX_OUTPUT_BUFFERED: usize = 40 * 1024 * 1024;

/// Who speaks first. The party that dials is the initiator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Initiator,
    Responder,
}

/// Which conversation a channel carries. It goes into the Noise prologue, so a handshake meant
/// for one conversation fails against an endpoint of another (no cross-protocol confusion).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conversation {
    ClientTracker,
    TrackerTracker,
    ClientClient,
}

impl Conversation {
    fn prologue(self) -> &'static [u8] {
        match self {
            Conversation::ClientTracker => b"groupshare/1 client-tracker",
            Conversation::TrackerTracker => b"groupshare/1 tracker-tracker",
            Conversation::ClientClient => b"groupshare/1 client-client",
        }
    }
}

/// Derives the tracker pair's pre-shared key from the cluster key file's contents, so any
/// length of key file gives a full-strength 32-byte PSK and the raw key is used for nothing else.
/// Surrounding whitespace is ignored, so a trailing newline added by an editor changes nothing.
pub fn psk_from_cluster_key(cluster_key: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"groupshare tracker-link psk v1\0");
    h.update(cluster_key.trim_ascii());
    h.finalize().into()
}

/// The X25519 public key of a private key.
pub(crate) fn x25519_public(private: &[u8; KEY_LEN]) -> [u8; KEY_LEN] {
    curve25519_dalek::montgomery::MontgomeryPoint::mul_base_clamped(*private).to_bytes()
}

/// Why a channel stopped. Every variant means: close the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChannelError {
    /// A record failed authentication: altered on the way, replayed, reordered, or made with
    /// another pre-shared key or for another conversation.
    Authentication { during_handshake: bool },
    /// A record longer than this phase allows.
    RecordTooLarge { len: usize, limit: usize },
    /// A handshake message that does not fit where the handshake is.
    UnexpectedMessage(&'static str),
    /// `send` would queue more than the named limit.
    BufferFull { what: &'static str, limit: usize },
    /// Setting up the handshake or getting randomness failed.
    Setup(String),
    /// The channel failed earlier and refuses everything since.
    Closed,
}

impl fmt::Display for ChannelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChannelError::Authentication { during_handshake: true } => write!(
                f,
                "secure handshake failed: the other side does not hold the expected key, or the message was altered"
            ),
            ChannelError::Authentication { during_handshake: false } => write!(
                f,
                "a record failed authentication (altered, replayed or reordered on the way)"
            ),
            ChannelError::RecordTooLarge { len, limit } => {
                write!(f, "a record of {len} bytes exceeds the limit of {limit}")
            }
            ChannelError::UnexpectedMessage(what) => write!(f, "unexpected handshake message: {what}"),
            ChannelError::BufferFull { what, limit } => {
                write!(f, "{what} exceeds {limit} bytes; the other side is not keeping up")
            }
            ChannelError::Setup(e) => write!(f, "cannot set up the secure channel: {e}"),
            ChannelError::Closed => write!(f, "the secure channel failed earlier"),
        }
    }
}

impl std::error::Error for ChannelError {}

/// The keys one end brings to a handshake.
#[derive(Clone, Copy)]
pub struct ChannelKeys<'a> {
    pub identity: &'a Identity,
    /// Both ends must hold the same PSK (tracker ↔ tracker); `None` elsewhere.
    pub psk: Option<&'a [u8; 32]>,
    pub conversation: Conversation,
}

enum Phase {
    Handshaking(Box<snow::HandshakeState>),
    Established(Box<snow::TransportState>),
    Failed,
}

/// One end of a secure channel. See the module comment for how a loop drives it.
pub struct SecureChannel {
    phase: Phase,
    /// The record being received, header included, while it is split across `receive` calls;
    /// never more than one record (`HEADER_LEN + MAX_RECORD`).
    partial: Vec<u8>,
    /// Decrypted bytes from `plain_start` on are the caller's to take.
    plain: Vec<u8>,
    plain_start: usize,
    /// Records to send, from `out_start` on.
    out: Vec<u8>,
    out_start: usize,
    /// Plaintext handed to `send` before the handshake finished.
    early: Vec<u8>,
    remote_static: Option<[u8; KEY_LEN]>,
    handshake_hash: Vec<u8>,
}

impl fmt::Debug for SecureChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let phase = match self.phase {
            Phase::Handshaking(_) => "handshaking",
            Phase::Established(_) => "established",
            Phase::Failed => "failed",
        };
        f.debug_struct("SecureChannel")
            .field("phase", &phase)
            .field("plaintext", &self.plaintext().len())
            .field("output", &self.output().len())
            .finish()
    }
}

impl SecureChannel {
    /// Starts a handshake. An initiator has its first message ready in `output()` at once.
    pub fn new(role: Role, keys: ChannelKeys<'_>) -> Result<SecureChannel, ChannelError> {
        let suite = if keys.psk.is_some() { SUITE_PSK } else { SUITE };
        let params: NoiseParams = suite
            .parse()
            .map_err(|e| ChannelError::Setup(format!("{suite}: {e}")))?;
        let setup = |e: snow::Error| ChannelError::Setup(e.to_string());
        let mut builder = snow::Builder::with_resolver(params, resolver::resolver())
            .local_private_key(keys.identity.private())
            .map_err(setup)?
            .prologue(keys.conversation.prologue())
            .map_err(setup)?;
        if let Some(psk) = keys.psk {
            builder = builder.psk(0, psk).map_err(setup)?;
        }
        let hs = match role {
            Role::Initiator => builder.build_initiator(),
            Role::Responder => builder.build_responder(),
        }
        .map_err(setup)?;
        let mut ch = SecureChannel {
            phase: Phase::Handshaking(Box::new(hs)),
            partial: Vec::new(),
            plain: Vec::new(),
            plain_start: 0,
            out: Vec::new(),
            out_start: 0,
            early: Vec::new(),
            remote_static: None,
            handshake_hash: Vec::new(),
        };
        if role == Role::Initiator {
            ch.advance_handshake()?;
        }
        Ok(ch)
    }

    /// True once the handshake is done and `remote_static` is known.
    pub fn is_established(&self) -> bool {
        matches!(self.phase, Phase::Established(_))
    }

    /// The other side's static public key, proven by the handshake.
    pub fn remote_static(&self) -> Option<&[u8; KEY_LEN]> {
        self.remote_static.as_ref()
    }

    pub fn remote_fingerprint(&self) -> Option<Fingerprint> {
        self.remote_static.as_ref().map(Fingerprint::of)
    }

    /// The Noise handshake hash: unique to this channel and equal at both ends, for binding a
    /// proof (a login, a ticket) to this channel so it cannot be replayed on another.
    pub fn handshake_hash(&self) -> Option<&[u8]> {
        self.is_established().then_some(&self.handshake_hash[..])
    }

    /// Feeds ciphertext as it arrived. Returns how many bytes were consumed: fewer than given
    /// only when the plaintext buffer is full — take plaintext, then feed the rest again.
    pub fn receive(&mut self, mut bytes: &[u8]) -> Result<usize, ChannelError> {
        if matches!(self.phase, Phase::Failed) {
            return Err(ChannelError::Closed);
        }
        let given = bytes.len();
        let result = (|| {
            while !bytes.is_empty() {
                if self.is_established()
                    && self.plaintext().len() + MAX_RECORD_PLAINTEXT > MAX_PLAINTEXT_BUFFERED
                {
                    break;
                }
                // Whole records straight from the input, without copying them first.
                if self.partial.is_empty() {
                    if let Some(len) = self.record_len(bytes)? {
                        if bytes.len() >= HEADER_LEN + len {
                            let (record, rest) = bytes.split_at(HEADER_LEN + len);
                            self.handle_record(&record[HEADER_LEN..])?;
                            bytes = rest;
                            continue;
                        }
                    }
                }
                // Otherwise gather the header, then the body, in `partial`.
                let need = if self.partial.len() < HEADER_LEN {
                    HEADER_LEN - self.partial.len()
                } else {
                    let len = self.record_len(&self.partial)?.unwrap_or(0);
                    HEADER_LEN + len - self.partial.len()
                };
                let take = need.min(bytes.len());
                self.partial.extend_from_slice(&bytes[..take]);
                bytes = &bytes[take..];
                if self.partial.len() >= HEADER_LEN {
                    if let Some(len) = self.record_len(&self.partial)? {
                        if self.partial.len() == HEADER_LEN + len {
                            let record = std::mem::take(&mut self.partial);
                            self.handle_record(&record[HEADER_LEN..])?;
                            self.partial = record;
                            self.partial.clear();
                        }
                    }
                }
            }
            Ok(given - bytes.len())
        })();
        if result.is_err() {
            self.fail();
        }
        result
    }

    /// The length a record's header announces, checked against this phase's limit; `None` while
    /// fewer than `HEADER_LEN` bytes are there.
    fn record_len(&self, bytes: &[u8]) -> Result<Option<usize>, ChannelError> {
        if bytes.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = usize::from(u16::from_be_bytes([bytes[0], bytes[1]]));
        let limit = match self.phase {
            Phase::Handshaking(_) => MAX_HANDSHAKE_RECORD,
            Phase::Established(_) => MAX_RECORD,
            Phase::Failed => return Err(ChannelError::Closed),
        };
        if len > limit {
            return Err(ChannelError::RecordTooLarge { len, limit });
        }
        Ok(Some(len))
    }

    fn handle_record(&mut self, record: &[u8]) -> Result<(), ChannelError> {
        match &mut self.phase {
            Phase::Handshaking(hs) => {
                if hs.is_my_turn() {
                    return Err(ChannelError::UnexpectedMessage(
                        "a message arrived while it was this side's turn",
                    ));
                }
                let mut payload = [0u8; MAX_HANDSHAKE_RECORD];
                let n = hs.read_message(record, &mut payload).map_err(|_| {
                    ChannelError::Authentication {
                        during_handshake: true,
                    }
                })?;
                if n != 0 {
                    return Err(ChannelError::UnexpectedMessage(
                        "a handshake message with a payload",
                    ));
                }
                self.advance_handshake()
            }
            Phase::Established(ts) => {
                if self.plain_start > 0 && self.plain_start * 2 >= self.plain.len() {
                    self.plain.drain(..self.plain_start);
                    self.plain_start = 0;
                }
                let at = self.plain.len();
                // Room for the whole record: ring decrypts in place and would allocate otherwise.
                self.plain.resize(at + record.len(), 0);
                match ts.read_message(record, &mut self.plain[at..]) {
                    Ok(n) => {
                        self.plain.truncate(at + n);
                        Ok(())
                    }
                    Err(_) => {
                        self.plain.truncate(at);
                        Err(ChannelError::Authentication {
                            during_handshake: false,
                        })
                    }
                }
            }
            Phase::Failed => Err(ChannelError::Closed),
        }
    }

    /// Writes our handshake message if it is our turn, and moves to transport once done.
    fn advance_handshake(&mut self) -> Result<(), ChannelError> {
        let Phase::Handshaking(hs) = &mut self.phase else {
            return Ok(());
        };
        if !hs.is_handshake_finished() && hs.is_my_turn() {
            let mut msg = [0u8; MAX_HANDSHAKE_RECORD];
            let n = hs
                .write_message(&[], &mut msg)
                .map_err(|e| ChannelError::Setup(e.to_string()))?;
            self.out.extend_from_slice(&(n as u16).to_be_bytes());
            self.out.extend_from_slice(&msg[..n]);
        }
        if !hs.is_handshake_finished() {
            return Ok(());
        }
        let remote: [u8; KEY_LEN] = hs
            .get_remote_static()
            .and_then(|k| k.try_into().ok())
            .ok_or(ChannelError::UnexpectedMessage(
                "the handshake ended without the other side's key",
            ))?;
        self.handshake_hash = hs.get_handshake_hash().to_vec();
        let Phase::Handshaking(hs) = std::mem::replace(&mut self.phase, Phase::Failed) else {
            return Err(ChannelError::Closed);
        };
        let ts = hs
            .into_transport_mode()
            .map_err(|e| ChannelError::Setup(e.to_string()))?;
        self.phase = Phase::Established(Box::new(ts));
        self.remote_static = Some(remote);
        let early = std::mem::take(&mut self.early);
        self.send(&early)
    }

    /// Encrypts `plaintext` into records for `output()`. Before the handshake is done it is
    /// queued (up to `MAX_EARLY_PLAINTEXT`) and sent as soon as it is.
    pub fn send(&mut self, plaintext: &[u8]) -> Result<(), ChannelError> {
        let result = self.send_inner(plaintext);
        if result.is_err() {
            self.fail();
        }
        result
    }

    fn send_inner(&mut self, plaintext: &[u8]) -> Result<(), ChannelError> {
        match &mut self.phase {
            Phase::Failed => Err(ChannelError::Closed),
            Phase::Handshaking(_) => {
                if self.early.len() + plaintext.len() > MAX_EARLY_PLAINTEXT {
                    return Err(ChannelError::BufferFull {
                        what: "data sent before the handshake finished",
                        limit: MAX_EARLY_PLAINTEXT,
                    });
                }
                self.early.extend_from_slice(plaintext);
                Ok(())
            }
            Phase::Established(ts) => {
                let records = plaintext.len().div_ceil(MAX_RECORD_PLAINTEXT);
                let grows = plaintext.len() + records * (HEADER_LEN + TAG_LEN);
                if self.out.len() - self.out_start + grows > MAX_OUTPUT_BUFFERED {
                    return Err(ChannelError::BufferFull {
                        what: "encrypted output",
                        limit: MAX_OUTPUT_BUFFERED,
                    });
                }
                if self.out_start > 0 && self.out_start * 2 >= self.out.len() {
                    self.out.drain(..self.out_start);
                    self.out_start = 0;
                }
                self.out.reserve(grows);
                for chunk in plaintext.chunks(MAX_RECORD_PLAINTEXT) {
                    let at = self.out.len();
                    self.out.resize(at + HEADER_LEN + chunk.len() + TAG_LEN, 0);
                    let n = ts
                        .write_message(chunk, &mut self.out[at + HEADER_LEN..])
                        .map_err(|e| ChannelError::Setup(e.to_string()))?;
                    self.out[at..at + HEADER_LEN].copy_from_slice(&(n as u16).to_be_bytes());
                    self.out.truncate(at + HEADER_LEN + n);
                }
                Ok(())
            }
        }
    }

    fn fail(&mut self) {
        // Keys are dropped with the states; nothing more is decrypted or encrypted.
        self.phase = Phase::Failed;
        self.partial = Vec::new();
        self.early = Vec::new();
    }

    /// Decrypted bytes not yet taken.
    pub fn plaintext(&self) -> &[u8] {
        &self.plain[self.plain_start..]
    }

    /// Marks the first `n` bytes of `plaintext()` as taken.
    pub fn consume_plaintext(&mut self, n: usize) {
        self.plain_start = (self.plain_start + n).min(self.plain.len());
        if self.plain_start == self.plain.len() {
            self.plain.clear();
            self.plain_start = 0;
        }
    }

    /// Copies decrypted bytes into `buf`; 0 when none are buffered.
    pub fn read_plaintext(&mut self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.plaintext().len());
        buf[..n].copy_from_slice(&self.plaintext()[..n]);
        self.consume_plaintext(n);
        n
    }

    /// Records ready for the socket.
    pub fn output(&self) -> &[u8] {
        &self.out[self.out_start..]
    }

    /// Marks the first `n` bytes of `output()` as written.
    pub fn consume_output(&mut self, n: usize) {
        self.out_start = (self.out_start + n).min(self.out.len());
        if self.out_start == self.out.len() {
            self.out.clear();
            self.out_start = 0;
        }
    }

    /// Writes pending records to a non-blocking stream until done or the socket is full;
    /// `Ok(true)` when nothing is left. (The one I/O helper, for loops that want it.)
    pub fn write_to<W: io::Write>(&mut self, stream: &mut W) -> io::Result<bool> {
        let mut pos = 0;
        let result = super::conn::write_pending(stream, self.output(), &mut pos);
        self.consume_output(pos);
        result
    }
}

/// Reading from a channel yields its plaintext; `WouldBlock` when none is buffered, so
/// `LineFramer::read_from` and other non-blocking readers work on it as on a socket.
impl io::Read for SecureChannel {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        match self.read_plaintext(buf) {
            0 => Err(io::ErrorKind::WouldBlock.into()),
            n => Ok(n),
        }
    }
}

pub mod bench;
mod resolver;
#[cfg(test)]
mod tests;
