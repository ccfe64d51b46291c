//! Everything the bench starts, and its clean-up: child processes killed on drop, temporary
//! directories removed on drop, free loopback ports, and /proc readings (RSS, open files).

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process that is killed (SIGKILL) and reaped when the guard is dropped, whatever
/// happened in between (error return, panic unwinding).
pub struct Guard {
    pub name: String,
    child: Option<Child>,
    pub stdin: Option<ChildStdin>,
    pub stdout: Option<BufReader<ChildStdout>>,
}

impl Guard {
    pub fn spawn(name: &str, cmd: &mut Command) -> Result<Guard, String> {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe; the closure touches nothing else. It makes the
        // child die with the bench even if the bench itself is killed.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {name} ({cmd:?}): {e}"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().map(BufReader::new);
        Ok(Guard {
            name: name.to_string(),
            child: Some(child),
            stdin,
            stdout,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Err if the process has already exited (with its status), so a crashed server is noticed.
    pub fn check_alive(&mut self) -> Result<(), String> {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => Ok(()),
            Some(Ok(Some(st))) => Err(format!("{} exited unexpectedly: {st}", self.name)),
            Some(Err(e)) => Err(format!("{}: cannot check its status: {e}", self.name)),
            None => Err(format!("{} was already stopped", self.name)),
        }
    }

    /// Reads one line of the child's standard output (the helper's handshake), bounded by the
    /// child's own progress; Err at end of output.
    pub fn read_line(&mut self) -> Result<String, String> {
        let out = self
            .stdout
            .as_mut()
            .ok_or_else(|| format!("{}: no stdout pipe", self.name))?;
        let mut l = String::new();
        match out.read_line(&mut l) {
            Ok(0) => Err(format!("{} closed its output", self.name)),
            Ok(_) => Ok(l.trim_end().to_string()),
            Err(e) => Err(format!("{}: reading its output: {e}", self.name)),
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        self.stdin = None;
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A fresh directory under the system temp dir, removed (recursively) on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Result<TempDir, String> {
        let p = std::env::temp_dir().join(format!(
            "groupshare-bench-{tag}-{}-{:x}",
            std::process::id(),
            groupshare::runtime::random_u64()
        ));
        std::fs::create_dir_all(&p)
            .map_err(|e| format!("cannot create temp dir {}: {e}", p.display()))?;
        Ok(TempDir(p))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Loopback ports that were free a moment ago (held together so they differ, then released).
pub fn free_ports(n: usize) -> Result<Vec<u16>, String> {
    let ls = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot find a free loopback port: {e}"))?;
    ls.iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("local_addr: {e}"))
}

/// VmRSS of a process in bytes.
pub fn rss_bytes(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let s = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| format!("no VmRSS line in {path}"))
}

/// Number of open descriptors of a process.
pub fn open_fds(pid: u32) -> Result<usize, String> {
    let path = format!("/proc/{pid}/fd");
    std::fs::read_dir(&path)
        .map(|d| d.count())
        .map_err(|e| format!("cannot list {path}: {e}"))
}

/// Polls `f` every 20 ms until it returns Some, or fails after `limit` with `what`.
pub fn wait_for<T>(
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Result<T, String> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(format!("timed out after {limit:?} waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until something accepts TCP connections on `addr`.
pub fn wait_listening(addr: SocketAddr, limit: Duration) -> Result<(), String> {
    wait_for(&format!("{addr} to accept connections"), limit, || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(200))
            .ok()
            .map(|_| ())
    })
}

/// Pipes for a helper process: stdin and stdout piped, stderr inherited.
pub fn piped(cmd: &mut Command) -> &mut Command {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
}
