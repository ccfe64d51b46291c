//! What the loop holds per connection: the socket with its buffers and flags, and what the
//! connection is (`ConnRole`): a client with its session, reply queue and staged upload, or
//! the link to the other tracker.

use super::limits::TurnBudget;
use super::login::PendingLogin;
use super::ordering::ReplyQueue;
use super::replication::LinkConn;
use crate::net::conn::Conn;
use crate::net::secure_stream::SecureStream;
use crate::pieces::Hash;
use crate::protocol::tracker::ErrorReply;
use crate::tracker::op::Token as SessionToken;
use mio::net::TcpStream;
use std::time::Instant;

/// An `upload_file` whose hash lines are still arriving.
pub(super) struct StagedUpload {
    pub(super) tag: u64,
    /// `None` when the request was refused: its hash lines are read and dropped.
    pub(super) target: Option<UploadTarget>,
    pub(super) hashes: Vec<Hash>,
    pub(super) lines_left: usize,
    pub(super) npieces: usize,
    /// The refusal to answer once the hash lines are read.
    pub(super) bad: Option<ErrorReply>,
}

/// Where a staged upload goes once its hashes are in.
pub(super) struct UploadTarget {
    pub(super) group: String,
    pub(super) file: String,
    pub(super) size: u64,
}

/// A client connection's own state.
pub(super) struct ClientConn {
    pub(super) instance: Option<u64>,
    /// The session this connection acts as once its `login`/`attach` is applied; a drop
    /// before logout proposes the logout.
    pub(super) session: Option<SessionToken>,
    /// Replies in request order; a write's waits for its commit or for its forward.
    pub(super) replies: ReplyQueue,
    pub(super) upload: Option<StagedUpload>,
    /// A request line read but held back until forwarded writes return.
    pub(super) deferred: Option<Vec<u8>>,
    /// The `login_begin` this connection's `login` must answer; boxed so that idle
    /// connections, which never log in, stay small.
    pub(super) login: Option<Box<PendingLogin>>,
    /// A proposed login's reply words (token, secret, tracker proof), keyed by its token:
    /// sent once the login is applied; never replicated.
    pub(super) login_reply: Option<(SessionToken, String)>,
}

/// What a connection is: a client, or the link to (or a handshake with) the other tracker.
// Nearly every connection is a client: boxing the large variant would add an allocation
// to each, not save memory.
#[allow(clippy::large_enum_variant)]
pub(super) enum ConnRole {
    Client(ClientConn),
    Link(LinkConn),
}

pub(super) struct Connection {
    /// Every connection is a secure channel: the tracker is the responder to clients and to
    /// tracker 2, the initiator of the link it dials.
    pub(super) conn: Conn<SecureStream<TcpStream>>,
    /// Distinguishes this connection from a later one that reuses the slab key.
    pub(super) id: u64,
    pub(super) kind: ConnRole,
    pub(super) writable: bool,
    /// Its requests stay unread in the socket: past an output limit (`Server::check_output`).
    pub(super) paused: bool,
    pub(super) closing: bool,
    /// The secure handshake has ended and `on_channel_established` has run.
    pub(super) established: bool,
    /// When bytes last arrived from it, on the loop's clock; liveness of the link and of
    /// logged-in clients is judged from this (through `LoopClock::heard_since`).
    pub(super) last_heard: Instant,
    /// A client's share of the current turn (the link has no budget: it never waits).
    pub(super) budget: TurnBudget,
    /// Already on the server's backlog for the next turn.
    pub(super) in_backlog: bool,
    /// Already in the server's handshake queue.
    pub(super) handshake_queued: bool,
}

impl Connection {
    /// The Noise handshake hash of this connection's channel (`None` before the handshake
    /// ends): a proof made with it (a login, an attach) is worthless on any other connection.
    pub(super) fn channel_binding(&self) -> Option<[u8; 32]> {
        self.conn.stream.channel_binding()
    }

    /// The other side's static key, proven by the handshake: for a client, the key the tracker
    /// publishes with its address so downloaders can check they reached it.
    pub(super) fn remote_key_hex(&self) -> Option<String> {
        self.conn
            .stream
            .remote_static()
            .map(|k| crate::pieces::to_hex(k))
    }

    /// Whether this connection may handle another line in turn `turn`.
    pub(super) fn has_turn_left(&self, turn: u64) -> bool {
        matches!(self.kind, ConnRole::Link(_)) || self.budget.has_room(turn)
    }

    /// A client line waits for this client's forwarded writes (see `may_go_ahead`).
    pub(super) fn has_deferred(&self) -> bool {
        matches!(&self.kind, ConnRole::Client(cl) if cl.deferred.is_some())
    }
}

impl ClientConn {
    pub(super) fn new() -> Self {
        ClientConn {
            instance: None,
            session: None,
            replies: ReplyQueue::default(),
            upload: None,
            deferred: None,
            login: None,
            login_reply: None,
        }
    }
}
