//! Accepting connections: the listener, and what happens when the process runs out of file
//! descriptors. The connection limit itself is the loop's (it knows how many it holds); this
//! only hands out accepted sockets and refuses politely what cannot be held.

use crate::protocol::tracker::ErrorCode;
use mio::net::{TcpListener, TcpStream};
use std::fs::File;
use std::io;

pub(super) struct Acceptor {
    pub listener: TcpListener,
    /// A spare descriptor released on EMFILE to accept and refuse one connection, so a full
    /// descriptor table never leaves the edge-triggered listener stuck with a pending backlog.
    spare_fd: Option<File>,
    /// Accepting stopped for lack of descriptors: retry when connections close, since the
    /// edge-triggered listener will not report the waiting backlog again.
    blocked: bool,
}

impl Acceptor {
    pub fn new(listener: TcpListener) -> Acceptor {
        Acceptor {
            listener,
            spare_fd: spare(),
            blocked: false,
        }
    }

    /// The next waiting connection; `None` once the backlog is drained (or cannot be, for
    /// lack of descriptors: then `blocked` until `retry_after_close`).
    pub fn next(&mut self) -> Option<TcpStream> {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => return Some(stream),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_fd_exhaustion(&e) => {
                    // Out of descriptors: free the spare, accept and refuse one, retry. Without a
                    // spare left, stop; the next connection event (or a close) retries.
                    // (accept reports EMFILE even with an empty backlog, so only the retry
                    // tells whether anything is waiting.)
                    let Some(spare_fd) = self.spare_fd.take() else {
                        log::warn!("out of file descriptors: {e}");
                        self.blocked = true;
                        return None;
                    };
                    drop(spare_fd);
                    let retry = self.listener.accept();
                    if let Ok((stream, _)) = &retry {
                        refuse(stream, "too many connections; try the other tracker");
                    }
                    let drained = retry.is_err();
                    drop(retry);
                    self.spare_fd = spare();
                    if self.spare_fd.is_none() {
                        self.blocked = true;
                        return None;
                    }
                    if drained {
                        return None;
                    }
                }
                Err(e) => {
                    log::warn!("accept failed: {e}");
                    return None;
                }
            }
        }
    }

    /// Connections closed: whether accepting was blocked and should be tried again now.
    pub fn retry_after_close(&mut self) -> bool {
        if !self.blocked {
            return false;
        }
        self.blocked = false;
        if self.spare_fd.is_none() {
            self.spare_fd = spare();
        }
        true
    }
}

fn spare() -> Option<File> {
    File::open("/dev/null").ok()
}

fn is_fd_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// Tells a connection we cannot take it, without blocking: one short line into an empty socket
/// buffer always fits.
pub(super) fn refuse(stream: &TcpStream, why: &str) {
    use std::io::Write;
    let mut s = stream;
    let line = crate::protocol::tracker::encode_err(0, ErrorCode::TooManyConnections, why);
    let _ = s.write(format!("{line}\n").as_bytes());
}
