//! Child processes that cannot outlive their driver, and their output as lines.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, Sender};

/// Starts `cmd` so that the kernel SIGKILLs the child when the thread that started it ends —
/// so also when the driving program dies without running any destructor (SIGKILL, abort).
/// Every harness process starts on the thread that owns it, so that thread ends last.
pub fn spawn_child(name: &str, cmd: &mut Command) -> Result<Child, String> {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and the closure touches nothing else.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.spawn()
        .map_err(|e| format!("cannot start {name} ({cmd:?}): {e}"))
}

/// Sends a signal (SIGKILL, SIGTERM, SIGSTOP...) to a child that has not been reaped.
pub fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: kill(2) on the pid of our own child; not reaped yet, so the pid is still its.
    unsafe {
        libc::kill(child.id() as libc::pid_t, sig);
    }
}

/// SIGKILL and reap.
pub(crate) fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Reads `r` line by line on a thread of its own and sends each line, made into a `T` by
/// `wrap`, to `tx`. The thread ends at end of input, at a read error, or once nobody receives.
pub fn forward_lines<R, T, F>(r: R, tx: Sender<T>, wrap: F)
where
    R: Read + Send + 'static,
    T: Send + 'static,
    F: Fn(String) -> T + Send + 'static,
{
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(wrap(line)).is_err() {
                break;
            }
        }
    });
}

/// The lines of `r`, read on a thread of its own.
pub fn lines_of(r: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    forward_lines(r, tx, |l| l);
    rx
}

/// Pipes for a helper process: stdin and stdout piped, stderr inherited.
pub fn piped(cmd: &mut Command) -> &mut Command {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
}

/// A binary beside the running program: the bench and the demo find `target/release/tracker`
/// and `client` this way (tests get theirs from Cargo's `CARGO_BIN_EXE_*`).
pub fn sibling_bin(name: &str) -> Result<PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    Ok(me
        .parent()
        .ok_or("the running program has no directory")?
        .join(name))
}

/// A child process killed (SIGKILL) and reaped when dropped, whatever happened in between
/// (error return, panic unwinding). For servers and helpers that are not driven line by line
/// (`Client` is for those); the standard output, if piped, can be read for a handshake line.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    pub stdin: Option<ChildStdin>,
    pub stdout: Option<BufReader<ChildStdout>>,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command) -> Result<Proc, String> {
        let mut child = spawn_child(name, cmd)?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().map(BufReader::new);
        Ok(Proc {
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

    /// Reads one line of the child's standard output (a helper's handshake), bounded by the
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
            kill_and_reap(&mut c);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_proc_is_killed_and_reaped_on_drop() {
        let p = Proc::spawn("sleep", Command::new("sleep").arg("30")).expect("spawn sleep");
        let pid = p.pid();
        drop(p);
        // Reaped, so the pid no longer names our child: kill(pid, 0) fails (or names a
        // stranger's recycled pid, which a fresh pid space makes vanishingly unlikely).
        // SAFETY: signal 0 only checks for existence.
        let alive = unsafe { libc::kill(pid as libc::pid_t, 0) } == 0;
        assert!(!alive, "pid {pid} still exists after drop");
    }

    #[test]
    fn lines_arrive_in_order_and_the_channel_closes_at_end_of_input() {
        let rx = lines_of(&b"one\ntwo\r\nthree"[..]);
        let got: Vec<String> = (0..3)
            .map(|_| rx.recv_timeout(Duration::from_secs(5)).expect("a line"))
            .collect();
        assert_eq!(got, ["one", "two", "three"]);
        assert!(rx.recv_timeout(Duration::from_secs(5)).is_err());
    }

    #[test]
    fn a_helper_handshake_line_is_read_and_end_of_output_is_an_error() {
        let mut p =
            Proc::spawn("echo", piped(Command::new("echo").arg("ready 3"))).expect("spawn echo");
        assert_eq!(p.read_line(), Ok("ready 3".to_string()));
        assert!(p.read_line().unwrap_err().contains("closed its output"));
    }
}
