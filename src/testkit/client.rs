//! A client process driven through its standard input as a person would type, its standard
//! output and error each collected by a reader thread and awaited with deadlines.

use super::process::{kill_and_reap, lines_of, signal, spawn_child};
use std::io::Write;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// The client's command line: `<first...> <tracker_info> --state-dir <state> <extra...>`,
/// where `first` is normally the listen address (`127.0.0.1:0`) or a tracker to prefer.
pub fn client_command(
    client_bin: &Path,
    first: &[&str],
    info: &Path,
    state: &Path,
    extra: &[&str],
) -> Command {
    let mut cmd = Command::new(client_bin);
    cmd.args(first)
        .arg(info)
        .arg("--state-dir")
        .arg(state)
        .args(extra);
    cmd
}

/// Which output of a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Out,
    Err,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Out => "stdout",
            Stream::Err => "stderr",
        }
    }
}

/// A running client, killed and reaped on drop. Each line awaited is consumed with the lines
/// before it, so that the next wait looks only at what came after.
pub struct Client {
    pub name: String,
    pub child: Child,
    stdin: Option<ChildStdin>,
    out: Receiver<String>,
    err: Receiver<String>,
    /// Every line seen so far, for failure messages and later checks.
    pub out_seen: Vec<String>,
    pub err_seen: Vec<String>,
    /// How many lines of each a wait has consumed.
    out_used: usize,
    err_used: usize,
}

impl Client {
    /// Starts `cmd` with all three standard streams piped.
    pub fn spawn(name: &str, mut cmd: Command) -> Result<Client, String> {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = spawn_child(&format!("client {name}"), &mut cmd)?;
        let out = lines_of(child.stdout.take().ok_or("client: no stdout pipe")?);
        let err = lines_of(child.stderr.take().ok_or("client: no stderr pipe")?);
        Ok(Client {
            name: name.to_string(),
            stdin: child.stdin.take(),
            child,
            out,
            err,
            out_seen: Vec::new(),
            err_seen: Vec::new(),
            out_used: 0,
            err_used: 0,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Writes one command line.
    pub fn send(&mut self, line: &str) -> Result<(), String> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| format!("{}: standard input already closed", self.name))?;
        writeln!(stdin, "{line}")
            .and_then(|_| stdin.flush())
            .map_err(|e| format!("{}: cannot write '{line}': {e}", self.name))
    }

    /// Closes standard input (end of input).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Takes in every line the reader threads have delivered.
    pub fn drain(&mut self) {
        while let Ok(l) = self.out.try_recv() {
            self.out_seen.push(l);
        }
        while let Ok(l) = self.err.try_recv() {
            self.err_seen.push(l);
        }
    }

    /// Everything seen on both outputs, for a failure message.
    pub fn describe(&self) -> String {
        format!(
            "client {}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.name,
            self.out_seen.join("\n"),
            self.err_seen.join("\n")
        )
    }

    /// Waits at most `limit` for a new line on `stream` that `want` accepts and consumes it;
    /// a line on the other output that `abort` accepts ends the wait at once. Errors name
    /// `what` was awaited.
    pub fn wait_line(
        &mut self,
        stream: Stream,
        what: &str,
        limit: Duration,
        want: impl Fn(&str) -> bool,
        abort: impl Fn(&str) -> bool,
    ) -> Result<String, String> {
        let deadline = Instant::now() + limit;
        loop {
            self.drain();
            let other = match stream {
                Stream::Out => &self.err_seen,
                Stream::Err => &self.out_seen,
            };
            if let Some(l) = other.iter().find(|l| abort(l)) {
                return Err(format!("{}: {l} (while waiting for {what})", self.name));
            }
            let (seen, used) = match stream {
                Stream::Out => (&self.out_seen, &mut self.out_used),
                Stream::Err => (&self.err_seen, &mut self.err_used),
            };
            if let Some(pos) = seen[*used..].iter().position(|l| want(l)) {
                let line = seen[*used + pos].clone();
                *used += pos + 1;
                return Ok(line);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(format!(
                    "{}: no {what} on {} within {limit:?}",
                    self.name,
                    stream.name()
                ));
            }
            let rx = match stream {
                Stream::Out => &self.out,
                Stream::Err => &self.err,
            };
            match rx.recv_timeout((deadline - now).min(Duration::from_millis(50))) {
                Ok(l) => match stream {
                    Stream::Out => self.out_seen.push(l),
                    Stream::Err => self.err_seen.push(l),
                },
                Err(RecvTimeoutError::Timeout) => {}
                // The client closed this output (it exited); the other may still deliver.
                Err(RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(Duration::from_millis(20))
                }
            }
        }
    }

    /// Waits for a new line containing `want` on `stream`.
    pub fn expect(
        &mut self,
        stream: Stream,
        want: &str,
        limit: Duration,
    ) -> Result<String, String> {
        self.wait_line(
            stream,
            &format!("line containing {want:?}"),
            limit,
            |l| l.contains(want),
            |_| false,
        )
    }

    /// The stdout lines not consumed yet (for listings, which may be empty); call `sync`
    /// first so that they are all in.
    pub fn new_out_lines(&mut self) -> Vec<String> {
        self.drain();
        let lines = self.out_seen[self.out_used..].to_vec();
        self.out_used = self.out_seen.len();
        lines
    }

    /// Runs `help` and waits for its last line: every output of earlier commands has then
    /// been printed (commands run in order). Returns stdout lines printed before help's.
    pub fn sync(&mut self, limit: Duration) -> Result<Vec<String>, String> {
        self.drain();
        let start = self.out_used;
        self.send("help")?;
        self.expect(Stream::Out, "exit", limit)?;
        let lines = &self.out_seen[start..self.out_used];
        // Drop help's own lines (they start with a command name followed by spaces).
        let keep = lines
            .iter()
            .position(|l| l.starts_with("create_user "))
            .unwrap_or(lines.len());
        Ok(lines[..keep].to_vec())
    }

    /// Every `error: ` line seen so far.
    pub fn errors(&mut self) -> Vec<String> {
        self.drain();
        self.err_seen
            .iter()
            .filter(|l| l.starts_with("error: "))
            .cloned()
            .collect()
    }

    /// Kills the client with SIGKILL (no clean-up of any kind) and reaps it.
    pub fn kill(&mut self) {
        signal(&self.child, libc::SIGKILL);
        let _ = self.child.wait();
        self.drain();
    }

    /// True while the process has not exited.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the client to exit, at most `limit`; None if it is still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.drain();
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stdin = None;
        kill_and_reap(&mut self.child);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shell standing in for a client: echoes stdin lines to stdout, `!x` lines to stderr.
    fn echo_client() -> Client {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(
            "while read l; do case \"$l\" in '!'*) echo \"${l#!}\" >&2;; *) echo \"$l\";; esac; done",
        );
        Client::spawn("echo", cmd).expect("spawn sh")
    }

    #[test]
    fn each_wait_consumes_its_line_and_those_before_it() {
        let mut c = echo_client();
        for l in ["a1", "b", "a2"] {
            c.send(l).expect("send");
        }
        let t = Duration::from_secs(10);
        assert_eq!(c.expect(Stream::Out, "a", t), Ok("a1".to_string()));
        assert_eq!(c.expect(Stream::Out, "a", t), Ok("a2".to_string()));
        assert!(c
            .expect(Stream::Out, "b", Duration::from_millis(100))
            .is_err());
    }

    #[test]
    fn an_abort_line_on_the_other_output_ends_the_wait_at_once() {
        let mut c = echo_client();
        c.send("!error: no").expect("send");
        let t = Instant::now();
        let e = c
            .wait_line(
                Stream::Out,
                "never",
                Duration::from_secs(10),
                |_| false,
                |l| l.starts_with("error:"),
            )
            .unwrap_err();
        assert!(e.contains("error: no"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(5));
        assert_eq!(c.errors(), ["error: no"]);
    }

    #[test]
    fn end_of_input_ends_the_client_and_drop_kills_one_that_runs() {
        let mut c = echo_client();
        c.close_stdin();
        assert!(c
            .wait_exit(Duration::from_secs(10))
            .is_some_and(|s| s.success()));
        let mut d = echo_client();
        assert!(d.alive());
        let pid = d.pid();
        drop(d);
        // SAFETY: signal 0 only checks for existence.
        assert!(unsafe { libc::kill(pid as libc::pid_t, 0) } != 0);
    }
}
