//! What one client connection may cost the loop, and the pure decisions built on those
//! numbers. The model is Redis: `processInputBuffer` handles a bounded amount of a client's
//! input per event, `client-query-buffer-limit` bounds what is read ahead, and
//! `client-output-buffer-limit` has a soft limit (here: stop reading the client) and a hard
//! one (close it).
//!
//! Everything here is plain arithmetic on counts the server passes in, so it is unit-tested
//! without sockets; the server applies the verdicts (`Server::check_output`, the turn budget
//! in `handle_lines`, the silence sweep).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Request lines one connection may have handled per loop turn before the next connection's
/// turn. A `create_user` or `login` costs one PBKDF2 (about 1 ms here), so a flooding
/// connection holds the loop for at most about this many milliseconds a turn; an honest
/// pipeline of reads is cut into turns of this many lines, costing it one extra poll each.
pub(super) const LINES_PER_TURN: usize = 32;
/// Request bytes one connection may have handled per turn: 32 upload hash lines of 64 KiB
/// would otherwise parse 2 MiB of hex in one turn.
pub(super) const BYTES_PER_TURN: usize = 256 * 1024;
/// Handshake messages the whole loop handles per turn (a connection's first message counts
/// one, its second one more). The responder's side of a Noise XX handshake costs about
/// 150–190 µs here (three X25519 operations and a key pair), so a burst of thousands of new
/// connections — a reconnect storm, or one address opening them on purpose — adds at most
/// about 1.5 ms to a turn, and the clients already connected keep being answered; the rest
/// wait in the `HandshakeQueue`, first come first served. The loop still completes thousands
/// of handshakes a second: with connections waiting it polls without sleeping.
pub(super) const HANDSHAKES_PER_TURN: usize = 8;
/// Requests of one client whose replies wait behind an uncommitted or forwarded write. Past
/// it the client is not read until the queue halves: every queued request holds a reply (and
/// at a follower, a forwarded write and its bookkeeping), so this bounds both.
pub(super) const MAX_AWAITING: usize = 256;
/// Soft output limit: bytes queued for a client (unsent output plus replies waiting behind a
/// write) past which its requests stay unread in the socket; reading resumes below half. One
/// large reply (a `download_file` of a big file is up to 20 MiB) may pass it; it then stops
/// the next request from being read.
pub(super) const OUTPUT_SOFT: usize = 1 << 20;
/// Hard output limit: a client with more queued than this is closed. Above the largest
/// single reply (20 MiB of hashes for a 256 GiB file) plus the soft limit, so an honest slow
/// reader is never closed, and low enough that a thousand stuck clients cannot exhaust memory.
pub(super) const OUTPUT_HARD: usize = 32 << 20;
/// A logged-in client heard from (any request, including the `ping` its link sends when idle)
/// less recently than this is taken for vanished: its connection is closed and its session
/// logged out, so its presence ends. Clients ping after `tracker_link::KEEPALIVE_IDLE` (10 s)
/// of quiet, so an honest idle client sends twice within it; with the 1 s sweep, a vanished
/// client's presence ends within 26 s, inside the 30 s the contract promises. A client whose
/// reading is paused (it does not read its replies) is not heard either: one that neither
/// reads nor writes for this long is as gone as a silent one.
pub(super) const CLIENT_SILENCE: Duration = Duration::from_secs(25);
/// How often logged-in connections are checked for silence: a scan of every connection, so
/// not every turn.
pub(super) const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// A turn that took longer than this, or a poll that returned this much later than its
/// timeout, means the loop itself was not running (stopped, swapped out, or one slow turn):
/// silence measured across that gap says nothing about the other side.
pub(super) const STALL: Duration = Duration::from_millis(500);

/// What a client's queued output and waiting replies allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum OutputVerdict {
    /// Read its requests.
    Read,
    /// Leave its requests in the socket until it reads (or its writes commit).
    Pause,
    /// It queued more than `OUTPUT_HARD`: close it.
    Close,
}

/// The verdict for a client with `queued` bytes of output (sent or not yet releasable) and
/// `awaiting` replies held behind writes; `paused` says whether it is paused now, because
/// reading resumes only below half of each limit (hysteresis, so a client hovering at the
/// limit is not paused and resumed every turn).
pub(super) fn output_verdict(queued: usize, awaiting: usize, paused: bool) -> OutputVerdict {
    if queued > OUTPUT_HARD {
        return OutputVerdict::Close;
    }
    let (bytes, replies) = if paused {
        (OUTPUT_SOFT / 2, MAX_AWAITING / 2)
    } else {
        (OUTPUT_SOFT, MAX_AWAITING)
    };
    if queued > bytes || awaiting > replies {
        OutputVerdict::Pause
    } else {
        OutputVerdict::Read
    }
}

/// One connection's share of a turn: lines and bytes handled, reset when a new turn starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct TurnBudget {
    turn: u64,
    lines: usize,
    bytes: usize,
}

impl TurnBudget {
    /// Whether another line may be handled in turn `turn`.
    pub fn has_room(&self, turn: u64) -> bool {
        self.turn != turn || (self.lines < LINES_PER_TURN && self.bytes < BYTES_PER_TURN)
    }

    /// Counts a line of `len` bytes handled in turn `turn`.
    pub fn spend(&mut self, turn: u64, len: usize) {
        if self.turn != turn {
            *self = TurnBudget {
                turn,
                lines: 0,
                bytes: 0,
            };
        }
        self.lines += 1;
        self.bytes += len;
    }
}

/// Connections with a handshake message to handle, first come first served. The loop takes
/// at most `HANDSHAKES_PER_TURN` a turn, after every established client's events of that turn,
/// so key agreement for newcomers never delays the requests of those already served.
#[derive(Debug, Default)]
pub(super) struct HandshakeQueue {
    waiting: VecDeque<(usize, u64)>,
}

impl HandshakeQueue {
    /// Connection `key` (with id `id`, which tells a reused slot apart) has a message waiting.
    /// The caller queues a connection once until it is taken.
    pub fn push(&mut self, key: usize, id: u64) {
        self.waiting.push_back((key, id));
    }

    /// This turn's share: up to `HANDSHAKES_PER_TURN` connections still `live`, oldest first;
    /// entries of connections closed meanwhile are dropped without counting.
    pub fn take_turn(&mut self, mut live: impl FnMut(usize, u64) -> bool) -> Vec<(usize, u64)> {
        let mut turn = Vec::new();
        while turn.len() < HANDSHAKES_PER_TURN {
            let Some((key, id)) = self.waiting.pop_front() else {
                break;
            };
            if live(key, id) {
                turn.push((key, id));
            }
        }
        turn
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

/// The loop's own clock for liveness: silence counts only from the moment the loop was last
/// able to hear. After a stall the other side gets a whole timeout from the resume, so a
/// tracker that was stopped (or stuck in one long turn) must hear from its partner, or fail
/// to, after it runs again before it calls the partner dead.
#[derive(Clone, Copy, Debug)]
pub(super) struct LoopClock {
    /// The last time the loop resumed after a stall (or started).
    awake_since: Instant,
    /// When the current turn began (the poll returned).
    turn_began: Instant,
}

impl LoopClock {
    pub fn new(now: Instant) -> LoopClock {
        LoopClock {
            awake_since: now,
            turn_began: now,
        }
    }

    /// A poll asked to sleep at most `timeout` from `polled_at` returned at `now`; the
    /// previous turn ran from `turn_began` to `polled_at`. Whether the loop had stalled.
    pub fn turn_starts(
        &mut self,
        polled_at: Instant,
        timeout: Option<Duration>,
        now: Instant,
    ) -> bool {
        let slow_turn = polled_at.saturating_duration_since(self.turn_began) > STALL;
        let overslept =
            timeout.is_some_and(|t| now.saturating_duration_since(polled_at) > t + STALL);
        self.turn_began = now;
        if slow_turn || overslept {
            self.awake_since = now;
        }
        slow_turn || overslept
    }

    /// `heard`, or the last resume if that is later: the start of the silence that counts.
    pub fn heard_since(&self, heard: Instant) -> Instant {
        heard.max(self.awake_since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_verdict_pauses_past_the_soft_limit_and_resumes_below_half() {
        assert_eq!(output_verdict(OUTPUT_SOFT, 0, false), OutputVerdict::Read);
        assert_eq!(
            output_verdict(OUTPUT_SOFT + 1, 0, false),
            OutputVerdict::Pause
        );
        assert_eq!(
            output_verdict(OUTPUT_SOFT, 0, true),
            OutputVerdict::Pause,
            "a paused client stays paused until below half"
        );
        assert_eq!(
            output_verdict(OUTPUT_SOFT / 2, 0, true),
            OutputVerdict::Read
        );
    }

    #[test]
    fn output_verdict_counts_replies_waiting_behind_writes() {
        assert_eq!(output_verdict(0, MAX_AWAITING, false), OutputVerdict::Read);
        assert_eq!(
            output_verdict(0, MAX_AWAITING + 1, false),
            OutputVerdict::Pause
        );
        assert_eq!(
            output_verdict(0, MAX_AWAITING / 2 + 1, true),
            OutputVerdict::Pause
        );
        assert_eq!(
            output_verdict(0, MAX_AWAITING / 2, true),
            OutputVerdict::Read
        );
    }

    #[test]
    fn output_verdict_closes_past_the_hard_limit_paused_or_not() {
        assert_eq!(
            output_verdict(OUTPUT_HARD + 1, 0, false),
            OutputVerdict::Close
        );
        assert_eq!(
            output_verdict(OUTPUT_HARD + 1, 0, true),
            OutputVerdict::Close
        );
        assert_eq!(output_verdict(OUTPUT_HARD, 0, true), OutputVerdict::Pause);
    }

    #[test]
    fn a_turn_budget_runs_out_by_lines_or_bytes_and_renews_each_turn() {
        let mut b = TurnBudget::default();
        for _ in 0..LINES_PER_TURN {
            assert!(b.has_room(1));
            b.spend(1, 10);
        }
        assert!(!b.has_room(1), "out of lines");
        assert!(b.has_room(2), "a new turn, a new budget");
        b.spend(2, BYTES_PER_TURN);
        assert!(!b.has_room(2), "out of bytes after one huge line");
        assert!(b.has_room(3));
    }

    #[test]
    fn handshakes_are_taken_oldest_first_a_turns_share_at_a_time_skipping_the_closed() {
        let mut q = HandshakeQueue::default();
        let n = HANDSHAKES_PER_TURN;
        for key in 0..n + 5 {
            q.push(key, key as u64 * 10);
        }
        // Connection 1 closed, and slot 2 now holds a newer connection (another id).
        let live = |key: usize, id: u64| key != 1 && id == key as u64 * 10 && key != 2;
        let first = q.take_turn(live);
        assert_eq!(
            first.len(),
            n,
            "a full turn's share, the closed ones not counted"
        );
        assert_eq!(first[0], (0, 0));
        assert_eq!(
            first[1],
            (3, 30),
            "oldest first, the two stale entries skipped"
        );
        assert_eq!(q.len(), 3, "the rest wait for the next turn");
        let second = q.take_turn(|_, _| true);
        assert_eq!(
            second.iter().map(|e| e.0).collect::<Vec<_>>(),
            vec![n + 2, n + 3, n + 4]
        );
        assert!(q.is_empty());
        assert!(q.take_turn(|_, _| true).is_empty());
    }

    #[test]
    fn the_loop_clock_forgives_silence_across_a_stall_only() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut c = LoopClock::new(t0);
        // A normal turn: polled at +10 ms with a 1 s timeout, woke at +1 s.
        assert!(!c.turn_starts(t0 + s / 100, Some(s), t0 + s));
        assert_eq!(
            c.heard_since(t0),
            t0,
            "no stall: silence counts from when last heard"
        );
        // Stopped for 8 s inside a 1 s poll.
        let resumed = t0 + 10 * s;
        assert!(c.turn_starts(t0 + s + s / 100, Some(s), resumed));
        assert_eq!(c.heard_since(t0), resumed);
        assert_eq!(c.heard_since(resumed + s), resumed + s);
        // One long turn (3 s of work), then a prompt poll.
        let worked = resumed + 3 * s;
        assert!(c.turn_starts(worked, Some(Duration::ZERO), worked));
        assert_eq!(c.heard_since(t0), worked);
        // An unbounded poll (nothing timed) may sleep as long as it likes.
        assert!(!c.turn_starts(worked, None, worked + 100 * s));
    }
}
