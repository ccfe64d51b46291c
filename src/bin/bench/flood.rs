//! Part E: fairness. Honest clients' latency at the leader of a pair, alone, then while one
//! other connection floods it with pipelined requests — once never reading its replies (the
//! tracker soon stops reading it: the output limits), once reading them as fast as it can (it
//! is never paused, so only the per-turn budget keeps it from starving the others) — and
//! while waves of new connections start handshakes (the loop's handshake budget). The pair
//! must still be one afterwards.

use crate::load::{Conns, Plan, Proto, Stats};
use crate::servers::TrackerPair;
use crate::Settings;
use std::fmt::Write as _;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// Honest connections, each with one `list_groups` in flight: a few interactive users.
const HONEST: usize = 10;

/// How the flooding connection behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flood {
    None,
    /// Pipelines without ever reading a reply.
    NotReading,
    /// Pipelines and reads (and discards) every reply.
    Reading,
    /// Not one connection: waves of `STORM` new ones, each sending its first handshake
    /// message at once (key agreement for the tracker), held a moment and closed.
    Handshakes,
}

/// New connections per wave of the handshake storm.
const STORM: usize = 1000;

impl Flood {
    fn label(self) -> &'static str {
        match self {
            Flood::None => "no flood",
            Flood::NotReading => "one connection floods, never reading",
            Flood::Reading => "one connection floods, reading its replies",
            Flood::Handshakes => "a storm of new connections, each starting its handshake",
        }
    }
}

#[derive(Clone, Debug)]
pub struct FloodRow {
    pub flood: Flood,
    pub honest: Stats,
    /// Request bytes the flooder got into the tracker's socket during the case (handshakes
    /// begun, for the storm).
    pub flood_bytes: u64,
}

#[derive(Clone, Debug)]
pub struct FloodCase {
    pub rows: Vec<FloodRow>,
    /// The `digest` roles after the last case: still `leader-paired` / `follower`.
    pub roles_after: String,
}

/// Requests that cost the tracker a parse and a reply each: malformed `create_user`,
/// `list_groups` without a session, `ping`, garbage.
fn batch() -> Vec<u8> {
    let mut b = Vec::new();
    for i in 0..1_000u32 {
        let line = match i % 4 {
            0 => format!("{i} create_user bad/name pw\n"),
            1 => format!("{i} list_groups\n"),
            2 => format!("{i} ping\n"),
            _ => format!("\u{1} garbage {i}\n"),
        };
        b.extend_from_slice(line.as_bytes());
    }
    b
}

/// The flooding connection; stops (and reports its bytes) when dropped.
struct Flooder {
    stop: Arc<AtomicBool>,
    bytes: Arc<AtomicU64>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Flooder {
    fn start(addr: SocketAddr, mode: Flood) -> Result<Option<Flooder>, String> {
        if mode == Flood::None {
            return Ok(None);
        }
        if mode == Flood::Handshakes {
            return Ok(Some(Flooder::storm(addr)));
        }
        // Inside the secure channel, as any client: the tracker drops a connection whose
        // first bytes are not a handshake, which would flood nothing.
        let mut s = groupshare::testkit::conn::secure_connect(addr, Duration::from_secs(3))
            .map_err(|e| format!("flood connect: {e}"))?;
        s.socket()
            .set_write_timeout(Some(Duration::from_millis(50)))
            .map_err(|e| format!("flood socket: {e}"))?;
        s.socket()
            .set_read_timeout(Some(Duration::from_millis(1)))
            .map_err(|e| format!("flood socket: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let bytes = Arc::new(AtomicU64::new(0));
        let reading = mode == Flood::Reading;
        let (st, by) = (stop.clone(), bytes.clone());
        let thread = thread::spawn(move || {
            let b = batch();
            let mut buf = vec![0u8; 256 * 1024];
            let mut queued = 0u64;
            while !st.load(Ordering::Relaxed) {
                // A batch goes into the channel once the last one left for the tracker, so
                // the count is what reached its socket.
                match s.flush() {
                    Ok(()) => {
                        by.fetch_add(queued, Ordering::Relaxed);
                        if s.write_all(&b).is_err() {
                            break;
                        }
                        queued = b.len() as u64;
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(_) => break,
                }
                if reading {
                    loop {
                        match s.read(&mut buf) {
                            Ok(0) => return,
                            Ok(_) => {}
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    ErrorKind::WouldBlock | ErrorKind::TimedOut
                                ) =>
                            {
                                break
                            }
                            Err(_) => return,
                        }
                    }
                }
            }
        });
        Ok(Some(Flooder {
            stop,
            bytes,
            threads: vec![thread],
        }))
    }

    /// Waves of `STORM` connections, each sending the first message of a handshake it never
    /// finishes; the count is of handshakes begun.
    fn storm(addr: SocketAddr) -> Flooder {
        use groupshare::net::identity::Identity;
        use groupshare::net::secure::{Conversation, Role};
        use groupshare::net::secure_stream::SecureStream;
        let stop = Arc::new(AtomicBool::new(false));
        let begun = Arc::new(AtomicU64::new(0));
        let (st, by) = (stop.clone(), begun.clone());
        let thread = thread::spawn(move || {
            let Ok(id) = Identity::generate() else {
                return;
            };
            while !st.load(Ordering::Relaxed) {
                // Connected and keyed first, then every first message sent in one burst: the
                // wave reaches the tracker together, as a reconnect storm would.
                let mut wave = Vec::with_capacity(STORM);
                for _ in 0..STORM {
                    let Ok(sock) = std::net::TcpStream::connect(addr) else {
                        continue;
                    };
                    if let Ok(s) = SecureStream::new(
                        sock,
                        Role::Initiator,
                        &id,
                        None,
                        Conversation::ClientTracker,
                        false,
                    ) {
                        wave.push(s);
                    }
                }
                for s in wave.iter_mut() {
                    if s.flush().is_ok() {
                        by.fetch_add(1, Ordering::Relaxed);
                    }
                }
                // Long enough for the tracker to take the wave's first messages.
                thread::sleep(Duration::from_millis(50));
            }
        });
        Flooder {
            stop,
            bytes: begun,
            threads: vec![thread],
        }
    }

    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        self.bytes.load(Ordering::Relaxed)
    }
}

/// Runs the three cases on a fresh pair, the honest clients at its leader.
pub fn run(s: &Settings, tracker_bin: &Path) -> Result<FloodCase, String> {
    let mut pair = TrackerPair::start(tracker_bin, "d")?;
    let lead = pair.leader;
    let mut honest = Conns::new(pair.logged_in(lead, "h", HONEST)?, 4)?;
    let plan = Plan {
        depth: 1,
        warmup: s.warmup,
        measure: s.measure,
    };
    let mut rows = Vec::new();
    // The quiet case once more at the end: on a shared machine the spread between two quiet
    // runs says how much of a difference is noise.
    for flood in [
        Flood::None,
        Flood::NotReading,
        Flood::Reading,
        Flood::Handshakes,
        Flood::None,
    ] {
        eprintln!("bench:   honest list_groups, {}", flood.label());
        let flooder = Flooder::start(pair.addrs[lead - 1], flood)?;
        // Let the flood fill the socket buffers before measuring.
        thread::sleep(Duration::from_millis(200));
        let st = honest.run(Proto::Tracker, plan, crate::tracker_read);
        let flood_bytes = flooder.map_or(0, Flooder::finish);
        let st = st.map_err(|e| format!("{e}\n{}", pair.log_tail()))?;
        pair.check_alive()?;
        rows.push(FloodRow {
            flood,
            honest: st,
            flood_bytes,
        });
    }
    let roles_after = format!(
        "{} / {}",
        pair.role(1).unwrap_or_default(),
        pair.role(2).unwrap_or_default()
    );
    Ok(FloodCase { rows, roles_after })
}

/// The report's section.
pub fn section(o: &mut String, case: Option<&Result<FloodCase, String>>) {
    let Some(case) = case else {
        return;
    };
    let _ = writeln!(
        o,
        "## E. Fairness: honest clients beside a flooding connection\n"
    );
    let _ = writeln!(
        o,
        "{HONEST} logged-in connections at the leader of a pair, each with one `list_groups` in \
         flight, while one more connection pipelines malformed `create_user`, `list_groups` \
         without a session, `ping` and garbage lines as fast as it can write. The tracker gives \
         each connection at most 32 lines a turn and stops reading one whose unread replies \
         pass 1 MiB (src/tracker/server/limits.rs). In the storm, waves of {STORM} new \
         connections each send the first message of a secure handshake at once (the tracker \
         answers with its own: key agreement, 150–190 µs each), are held 50 ms and closed; \
         the tracker takes at most 8 handshake messages a turn, after the turn's established \
         clients. A loop held up shows in the slowest reply (*max*) long before the p99: ten \
         requests stalled per wave are a few in a hundred thousand.\n"
    );
    match case {
        Err(e) => {
            let _ = writeln!(o, "Failed: {e}\n");
        }
        Ok(c) => {
            let _ = writeln!(
                o,
                "| case | honest p50 | honest p99 | honest max | honest req/s | flood |"
            );
            let _ = writeln!(o, "| --- | --- | --- | --- | --- | --- |");
            for r in &c.rows {
                let _ = writeln!(
                    o,
                    "| {} | {:.0} µs | {:.0} µs | {:.1} ms | {:.0} | {} |",
                    r.flood.label(),
                    r.honest.p50_us,
                    r.honest.p99_us,
                    r.honest.max_us / 1000.0,
                    r.honest.rate(),
                    if r.flood == Flood::None {
                        "–".to_string()
                    } else if r.flood == Flood::Handshakes {
                        format!("{} handshakes begun", r.flood_bytes)
                    } else {
                        format!("{:.1} MiB", r.flood_bytes as f64 / (1 << 20) as f64)
                    }
                );
            }
            let _ = writeln!(o, "\nRoles after the flood: {}.\n", c.roles_after);
        }
    }
}
