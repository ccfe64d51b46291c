//! Process set-up both programs share: logging, SIGINT/SIGTERM delivered into a poll loop,
//! the open-file limit, randomness.

use mio::net::UnixStream;
use std::io::Read;

/// Starts logging to standard error at the given level name (error, warn, info, debug, trace).
pub fn init_logging(level: log::LevelFilter) {
    // A second init (tests calling main logic twice) is harmless; ignore its error.
    let _ = simple_logger::SimpleLogger::new().with_level(level).init();
}

/// Resolves `-v`/`-q` counts and an explicit `--log-level` into a level.
pub fn log_level(
    verbose: u8,
    quiet: u8,
    explicit: Option<&str>,
) -> Result<log::LevelFilter, String> {
    if let Some(name) = explicit {
        return name.parse().map_err(|_| {
            format!("unknown log level '{name}' (use error, warn, info, debug or trace)")
        });
    }
    let base: i32 = 2 + verbose as i32 - quiet as i32; // 2 = info
    Ok(match base {
        i32::MIN..=-1 => log::LevelFilter::Off,
        0 => log::LevelFilter::Error,
        1 => log::LevelFilter::Warn,
        2 => log::LevelFilter::Info,
        3 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    })
}

/// A readable source that becomes ready when SIGINT or SIGTERM arrives: the signal handler
/// writes a byte into a socket pair, which the loop polls like any other connection.
pub struct SignalPipe {
    pub receiver: UnixStream,
}

impl SignalPipe {
    pub fn new() -> std::io::Result<Self> {
        let (receiver, sender) = UnixStream::pair()?;
        let sender = std::os::unix::net::UnixStream::from(std::os::fd::OwnedFd::from(sender));
        let sender2 = sender.try_clone()?;
        signal_hook::low_level::pipe::register(signal_hook::consts::SIGINT, sender)?;
        signal_hook::low_level::pipe::register(signal_hook::consts::SIGTERM, sender2)?;
        Ok(SignalPipe { receiver })
    }

    /// True if a signal arrived since the last call (drains the pipe).
    pub fn take(&mut self) -> bool {
        let mut buf = [0u8; 64];
        let mut got = false;
        while let Ok(n) = self.receiver.read(&mut buf) {
            if n == 0 {
                break;
            }
            got = true;
        }
        got
    }
}

/// Raises the soft open-file limit to the hard limit; returns the new soft limit.
pub fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
        lim.rlim_cur
    }
}

/// Fills `buf` from the kernel's CSPRNG through the `getrandom` system call (no file
/// descriptor, so it works at the descriptor limit too). Used for salts, session tokens,
/// secrets, nonces and instance ids, none of which may be guessable: a failure is an error for
/// the caller to report, never a weaker fallback.
pub fn random_bytes(buf: &mut [u8]) -> std::io::Result<()> {
    getrandom::fill(buf)
        .map_err(|e| std::io::Error::other(format!("cannot get random bytes from the kernel: {e}")))
}

/// `n` random bytes as `2n` lowercase hex digits: session tokens and secrets.
pub fn random_hex(n: usize) -> Result<String, String> {
    let mut b = vec![0u8; n];
    random_bytes(&mut b).map_err(|e| e.to_string())?;
    Ok(crate::pieces::to_hex(&b))
}

/// A random 64-bit value (a client's instance id).
pub fn random_u64() -> Result<u64, String> {
    let mut b = [0u8; 8];
    random_bytes(&mut b).map_err(|e| e.to_string())?;
    Ok(u64::from_le_bytes(b))
}

/// A seed for `Rng` (tie-breaks, jitter, temporary names): not a secret, so when the kernel
/// gives no random bytes the time and pid do — never use it for anything that must not be
/// guessed.
pub fn seed_u64() -> u64 {
    random_u64().unwrap_or_else(|_| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        t ^ (u64::from(std::process::id()) << 32)
    })
}

/// A small, fast, non-cryptographic generator for choices (random tie-breaks, jitter).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-enough in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbosity_counts_map_to_levels() {
        assert_eq!(log_level(0, 0, None).unwrap(), log::LevelFilter::Info);
        assert_eq!(log_level(1, 0, None).unwrap(), log::LevelFilter::Debug);
        assert_eq!(log_level(0, 2, None).unwrap(), log::LevelFilter::Error);
        assert_eq!(log_level(0, 9, None).unwrap(), log::LevelFilter::Off);
        assert_eq!(
            log_level(0, 0, Some("warn")).unwrap(),
            log::LevelFilter::Warn
        );
        assert!(log_level(0, 0, Some("loud")).is_err());
    }

    #[test]
    fn random_hex_is_lowercase_hex_of_the_asked_length_and_differs() {
        let a = random_hex(16).expect("kernel randomness");
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
        assert_ne!(Ok(a), random_hex(16));
        assert_eq!(random_hex(3).map(|h| h.len()), Ok(6));
    }

    #[test]
    fn rng_stays_in_range() {
        let mut r = Rng::new(7);
        assert!((0..1000).all(|_| r.below(3) < 3));
    }
}
