//! Real client processes (`target/release/client`) driven through their standard input, as a
//! person or a script would: one reader thread per output stream timestamps every line on
//! arrival, so a result's time is when the client printed it, not when the bench looked.
//! Also /proc readings of a client (CPU time, peak RSS) and the page-cache residency of a file.

use groupshare::testkit::{client_command, forward_lines, spawn_child};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::{Duration, Instant};

/// Which stream a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Out,
    Err,
}

/// A line of a client's output with the moment the bench received it.
#[derive(Clone, Debug)]
pub struct Line {
    pub at: Instant,
    pub stream: Stream,
    pub text: String,
}

/// A client process, SIGKILLed and reaped on drop (and when the bench dies: PDEATHSIG).
pub struct ClientProc {
    pub name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<Line>,
    /// Every line seen so far (for error messages and notes such as `switched to tracker`).
    pub seen: Vec<Line>,
}

/// Forwards the lines of one output, each stamped with the moment it arrived.
fn reader(r: impl Read + Send + 'static, stream: Stream, tx: Sender<Line>) {
    forward_lines(r, tx, move |text| Line {
        at: Instant::now(),
        stream,
        text,
    });
}

impl ClientProc {
    /// `client <listen> <tracker_info> --state-dir <state> -q`.
    pub fn spawn(
        bin: &Path,
        name: &str,
        listen: &str,
        tracker_info: &Path,
        state: &Path,
    ) -> Result<ClientProc, String> {
        Self::spawn_with(bin, name, listen, tracker_info, state, &[])
    }

    /// As `spawn`, with `extra` arguments after the usual ones (e.g. `--upload-limit 8M`).
    pub fn spawn_with(
        bin: &Path,
        name: &str,
        listen: &str,
        tracker_info: &Path,
        state: &Path,
        extra: &[&str],
    ) -> Result<ClientProc, String> {
        let args: Vec<&str> = ["-q"].iter().chain(extra).copied().collect();
        let mut cmd = client_command(bin, &[listen], tracker_info, state, &args);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = spawn_child(&format!("client {name}"), &mut cmd)?;
        let (tx, rx) = channel();
        reader(
            child.stdout.take().ok_or("no stdout pipe")?,
            Stream::Out,
            tx.clone(),
        );
        reader(
            child.stderr.take().ok_or("no stderr pipe")?,
            Stream::Err,
            tx,
        );
        Ok(ClientProc {
            name: name.to_string(),
            stdin: child.stdin.take(),
            child,
            lines: rx,
            seen: Vec::new(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends one command line; returns the moment it was written.
    pub fn send(&mut self, line: &str) -> Result<Instant, String> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| format!("{}: stdin already closed", self.name))?;
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|_| stdin.flush())
            .map_err(|e| format!("{}: cannot send {line:?}: {e}", self.name))?;
        Ok(Instant::now())
    }

    /// Waits for a line that `want` accepts. An `error:` line on stderr that `want` does not
    /// accept fails at once, as does the client's exit.
    pub fn expect(
        &mut self,
        what: &str,
        timeout: Duration,
        want: impl Fn(Stream, &str) -> bool,
    ) -> Result<Line, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self
                .lines
                .recv_timeout(left.min(Duration::from_millis(200)))
            {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if want(l.stream, &l.text) {
                        return Ok(l);
                    }
                    if l.stream == Stream::Err && l.text.starts_with("error:") {
                        return Err(format!(
                            "{}: {} (while waiting for {what})",
                            self.name, l.text
                        ));
                    }
                }
                Err(_) => {
                    if let Ok(Some(st)) = self.child.try_wait() {
                        return Err(format!(
                            "{}: exited ({st}) while waiting for {what}; last lines: {}",
                            self.name,
                            self.tail()
                        ));
                    }
                    if Instant::now() >= deadline {
                        return Err(format!(
                            "{}: no {what} within {timeout:?}; last lines: {}",
                            self.name,
                            self.tail()
                        ));
                    }
                }
            }
        }
    }

    /// Collects whatever the client prints for `wait` (into `seen`); returns those lines.
    pub fn drain(&mut self, wait: Duration) -> Vec<Line> {
        let deadline = Instant::now() + wait;
        let mut got = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    got.push(l);
                }
                Err(_) => break,
            }
        }
        got
    }

    /// Sends `line` and waits for a standard-output line starting with `prefix`.
    pub fn cmd(&mut self, line: &str, prefix: &str) -> Result<Line, String> {
        self.send(line)?;
        self.expect(
            &format!("{prefix:?} after {line:?}"),
            Duration::from_secs(30),
            |s, t| s == Stream::Out && t.starts_with(prefix),
        )
    }

    /// The last few lines seen, for error messages.
    pub fn tail(&self) -> String {
        let from = self.seen.len().saturating_sub(5);
        self.seen[from..]
            .iter()
            .map(|l| l.text.as_str())
            .collect::<Vec<_>>()
            .join(" | ")
    }

    /// `exit`, end of input, and up to `limit` for the process to leave; SIGKILL after that.
    /// Returns whether it exited by itself.
    pub fn exit(&mut self, limit: Duration) -> bool {
        let _ = self.send("exit");
        self.stdin = None;
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for ClientProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// utime + stime of a process, in seconds (/proc/<pid>/stat, clock ticks).
pub fn cpu_secs(pid: u32) -> Result<f64, String> {
    let path = format!("/proc/{pid}/stat");
    let s = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    // The command name (field 2) may hold spaces; fields after the last ')' are plain.
    let rest = s
        .rsplit_once(')')
        .map(|x| x.1)
        .ok_or_else(|| format!("unexpected {path}"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, stime 15.
    let tick = |i: usize| -> Result<u64, String> {
        f.get(i - 3)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("no field {i} in {path}"))
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok((tick(14)? + tick(15)?) as f64 / hz)
}

/// VmHWM (peak resident set) of a process in bytes.
pub fn peak_rss(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let s = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| format!("no VmHWM line in {path}"))
}

/// CPU time of the calling thread, in seconds.
pub fn thread_cpu_secs() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// The fraction of a file's pages that are in the page cache (mmap + mincore).
pub fn resident_fraction(path: &Path) -> Result<f64, String> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    let len = f
        .metadata()
        .map_err(|e| format!("stat {}: {e}", path.display()))?
        .len() as usize;
    if len == 0 {
        return Ok(1.0);
    }
    // SAFETY: a read-only shared mapping of a file we hold open, unmapped below; mincore only
    // writes into `vec`, which has one byte per page of the mapping.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        if p == libc::MAP_FAILED {
            return Err(format!(
                "mmap {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            ));
        }
        let page = libc::sysconf(libc::_SC_PAGESIZE).max(1) as usize;
        let mut vec = vec![0u8; len.div_ceil(page)];
        let r = libc::mincore(p, len, vec.as_mut_ptr());
        let err = std::io::Error::last_os_error();
        libc::munmap(p, len);
        if r != 0 {
            return Err(format!("mincore {}: {err}", path.display()));
        }
        Ok(vec.iter().filter(|b| **b & 1 == 1).count() as f64 / vec.len() as f64)
    }
}

/// Writes `size` bytes of [`crate::transfer::fill_random`] data to `path`.
pub fn make_file(path: &PathBuf, size: u64) -> Result<(), String> {
    let mut f = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut block = vec![0u8; 4 << 20];
    let mut left = size;
    let mut seed = 0x5851_f42d_4c95_7f2d_u64;
    while left > 0 {
        crate::transfer::fill_random(&mut block, seed);
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n])
            .map_err(|e| format!("{}: {e}", path.display()))?;
        left -= n as u64;
    }
    Ok(())
}

/// Reads a file once (so it is in the page cache).
pub fn read_through(path: &Path) -> Result<(), String> {
    let mut f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    while f
        .read(&mut buf)
        .map_err(|e| format!("{}: {e}", path.display()))?
        > 0
    {}
    Ok(())
}
